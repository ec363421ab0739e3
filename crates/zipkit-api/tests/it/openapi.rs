//! `/v1/openapi.json` is generated from the code; these tests tie it to what the API really sends.

use crate::common;

use std::collections::BTreeSet;

use common::{start, zip_body};
use serde_json::Value;
use zipkit_domain::Service;

fn keys(value: &Value) -> BTreeSet<String> {
    value
        .as_object()
        .expect("an object")
        .keys()
        .cloned()
        .collect()
}

#[tokio::test]
async fn the_openapi_document_describes_every_route_and_the_real_response_shapes() {
    let (db, _broker, app) = start().await;
    let (status, doc) = app.get("/v1/openapi.json").await;
    assert_eq!(status, 200, "served without a token");
    assert_eq!(app.get("/api/v1/openapi.json").await.1, doc);

    let operations: BTreeSet<String> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(move |method| format!("{method} {path}"))
        })
        .collect();
    let expected: BTreeSet<String> = [
        "post /v1/zips",
        "get /v1/zips",
        "get /v1/zips/{uuid}",
        "post /v1/zips/{uuid}/cancel",
        "get /v1/zips/{uuid}/skipped",
    ]
    .map(String::from)
    .into();
    assert_eq!(operations, expected);
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );

    // The documented zip object has exactly the fields a real response has.
    let (project, token) = app.project(&db, "Acme").await;
    app.bucket(&db, project, Service::S3, "my-zipkit-archives")
        .await;
    let (_, created) = app
        .send(app.post_zip(&token, &zip_body("my-zipkit-archives", 1)))
        .await;
    let schemas = &doc["components"]["schemas"];
    assert_eq!(
        keys(&schemas["ZipObject"]["properties"]),
        keys(&created["data"])
    );
    assert_eq!(
        keys(&schemas["Progress"]["properties"]),
        keys(&created["data"]["progress"])
    );
    assert_eq!(
        keys(&schemas["BucketRef"]["properties"]),
        keys(&created["data"]["bucket"])
    );
    let statuses: Vec<&str> = schemas["ZipObject"]["properties"]["status"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["none", "processing", "succeeded", "failed", "cancelled"]
    );

    // And the documented error envelope is the one errors use.
    let (_, error) = app.send(app.post_zip(&token, &zip_body("nope", 1))).await;
    assert_eq!(keys(&schemas["ErrorEnvelope"]["properties"]), keys(&error));
    assert_eq!(
        keys(&schemas["ErrorBody"]["properties"]),
        keys(&error["error"])
    );
    // The bounds the validators enforce are stated, the configured ones as configured.
    let body = &schemas["CreateZipBody"]["properties"];
    assert_eq!(body["urls"]["minItems"], 1);
    assert_eq!(
        body["urls"]["maxItems"], 50,
        "api.max_urls of the test settings"
    );
    assert_eq!(body["key"]["maxLength"], 1024);
    assert!(body["key"]["pattern"].is_string());
    assert!(schemas["UrlItem"]["properties"]["filename"]["pattern"].is_string());
    let list_params = doc["paths"]["/v1/zips"]["get"]["parameters"]
        .as_array()
        .unwrap();
    let limit = list_params.iter().find(|p| p["name"] == "limit").unwrap();
    assert_eq!(
        (&limit["schema"]["minimum"], &limit["schema"]["maximum"]),
        (&1.into(), &100.into())
    );
    let after = list_params
        .iter()
        .find(|p| p["name"] == "starting_after")
        .unwrap();
    assert_eq!(after["schema"]["format"], "uuid");
    assert!(doc["paths"]["/v1/zips/{uuid}/cancel"]["post"]["responses"]["400"].is_object());
    let create_body = keys(&schemas["CreateZipBody"]["properties"]);
    assert!(
        create_body.is_superset(&keys(&zip_body("x", 1))),
        "{create_body:?}"
    );
    app.stop().await;
}
