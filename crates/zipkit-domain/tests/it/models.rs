//! The models' queries against a real PostgreSQL (a fresh database per test).

use crate::common;

use chrono::Duration;
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use secrecy::{ExposeSecret, SecretString};
use zipkit_domain::crypto::CryptoError;
use zipkit_domain::crypto::KeyRing;
use zipkit_domain::enums::ProjectRole;
use zipkit_domain::models::{
    AccessToken, Bucket, BucketCredentials, JobError, ModelError, NewBucket, NewWebhookEndpoint,
    NewZip, NewZipEntry, Project, User, WebhookEndpoint, Zip, ZipOutcome, rotate_encryption_keys,
};
use zipkit_domain::schema::buckets;
use zipkit_domain::tokens::generate_token;
use zipkit_domain::values::{BucketName, EntryName, ObjectKey, SourceUrl};
use zipkit_domain::{Compression, OnError, ProjectId, Service, ZipStatus};
use zipkit_test_support::TestDatabase;

/// A fresh database with one project ("Acme") and one S3 bucket ("bucket-one") in it.
struct Fixture {
    _db: TestDatabase,
    conn: AsyncPgConnection,
    keyring: KeyRing,
    project: Project,
    bucket: Bucket,
}

async fn fixture() -> Fixture {
    let db = common::database().await;
    let mut conn = db.connect().await;
    let keyring = common::keyring("k1", &common::random_keys(&["k1"]));
    let project = Project::create(&mut conn, "Acme").await.expect("project");
    let bucket = Bucket::create(
        &mut conn,
        &keyring,
        new_bucket(project.id, "bucket-one", "AKIA1", "s"),
    )
    .await
    .expect("bucket");
    Fixture {
        _db: db,
        conn,
        keyring,
        project,
        bucket,
    }
}

fn credentials(access: &str, secret: &str) -> BucketCredentials {
    BucketCredentials {
        access_key_id: SecretString::from(access.to_owned()),
        secret_access_key: SecretString::from(secret.to_owned()),
    }
}

fn new_bucket(project_id: ProjectId, name: &str, access: &str, secret: &str) -> NewBucket {
    NewBucket {
        project_id,
        service: Service::S3,
        name: BucketName::parse(name).expect("valid bucket name"),
        region: "eu-west-1".into(),
        r2_account_id: None,
        endpoint_url: None,
        force_path_style: false,
        acl: None,
        credentials: credentials(access, secret),
    }
}

fn new_zip(project_id: ProjectId, bucket: &Bucket, names: &[&str]) -> NewZip {
    NewZip {
        listings: Vec::new(),
        manifest: None,
        traceparent: None,
        expected_size: None,
        result_settings: Default::default(),
        project_id,
        bucket_id: bucket.id,
        key: ObjectKey::parse("exports/a.zip").expect("valid key"),
        metadata: serde_json::Map::from_iter([(
            "order_id".to_owned(),
            serde_json::json!("order_456"),
        )]),
        compression: Compression::Auto,
        on_error: OnError::Fail,
        idempotency: None,
        entries: names
            .iter()
            .enumerate()
            .map(|(i, name)| NewZipEntry {
                url: SourceUrl::parse(&format!("https://example.com/{i}")).expect("valid url"),
                filename: EntryName::parse(name).expect("valid name"),
                given_filename: None,
                modified_at: None,
                declared_size: None,
            })
            .collect(),
    }
}

#[tokio::test]
async fn a_token_authenticates_only_by_its_own_hash_and_not_after_revocation() {
    let db = common::database().await;
    let conn = &mut db.connect().await;
    let project = Project::create(conn, "Acme").await.unwrap();
    let token = generate_token().unwrap();
    let other = generate_token().unwrap();
    let stored = AccessToken::create(conn, project.id, "ci", &token)
        .await
        .unwrap();
    assert_eq!(stored.prefix, token.display_prefix);
    assert_eq!(stored.token_hash, token.hash.as_bytes());

    let found = AccessToken::authenticate(conn, &token.hash)
        .await
        .unwrap()
        .expect("own hash finds it");
    assert_eq!(found.id, stored.id);
    assert!(
        AccessToken::authenticate(conn, &other.hash)
            .await
            .unwrap()
            .is_none()
    );

    assert!(
        AccessToken::revoke(conn, project.id, stored.id)
            .await
            .unwrap()
    );
    assert!(
        !AccessToken::revoke(conn, project.id, stored.id)
            .await
            .unwrap(),
        "revoke is idempotent"
    );
    assert!(
        AccessToken::authenticate(conn, &token.hash)
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn last_used_is_written_at_most_once_a_minute() {
    let db = common::database().await;
    let conn = &mut db.connect().await;
    let project = Project::create(conn, "Acme").await.unwrap();
    let token = AccessToken::create(conn, project.id, "ci", &generate_token().unwrap())
        .await
        .unwrap();
    let now = chrono::Utc::now();
    assert!(AccessToken::touch(conn, token.id, now).await.unwrap());
    assert!(
        !AccessToken::touch(conn, token.id, now + Duration::seconds(30))
            .await
            .unwrap()
    );
    assert!(
        AccessToken::touch(conn, token.id, now + Duration::seconds(61))
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn a_token_of_another_project_cannot_be_revoked() {
    let db = common::database().await;
    let conn = &mut db.connect().await;
    let a = Project::create(conn, "A").await.unwrap();
    let b = Project::create(conn, "B").await.unwrap();
    let token = generate_token().unwrap();
    let stored = AccessToken::create(conn, a.id, "ci", &token).await.unwrap();
    assert!(!AccessToken::revoke(conn, b.id, stored.id).await.unwrap());
    assert!(
        AccessToken::authenticate(conn, &token.hash)
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test]
async fn bucket_credentials_are_stored_sealed_and_open_for_their_own_row() {
    let db = common::database().await;
    let conn = &mut db.connect().await;
    let keyring = common::keyring("k1", &common::random_keys(&["k1"]));
    let project = Project::create(conn, "Acme").await.unwrap();
    let bucket = Bucket::create(
        conn,
        &keyring,
        new_bucket(project.id, "my-archives", "AKIAEXAMPLE1234", "s3cr3t/value"),
    )
    .await
    .unwrap();

    assert_eq!(bucket.access_key_hint, "…1234");
    assert_eq!(bucket.encryption_key_id, "k1");
    for stored in [
        &bucket.access_key_id_ciphertext,
        &bucket.secret_access_key_ciphertext,
    ] {
        assert!(!String::from_utf8_lossy(stored).contains("AKIAEXAMPLE1234"));
        assert!(!String::from_utf8_lossy(stored).contains("s3cr3t/value"));
    }
    assert!(!format!("{bucket:?}").contains("ciphertext"));
    let opened = bucket.credentials(&keyring).unwrap();
    assert_eq!(opened.access_key_id.expose_secret(), "AKIAEXAMPLE1234");
    assert_eq!(opened.secret_access_key.expose_secret(), "s3cr3t/value");
}

#[tokio::test]
async fn a_credential_ciphertext_copied_to_another_bucket_row_is_rejected() {
    let db = common::database().await;
    let conn = &mut db.connect().await;
    let keyring = common::keyring("k1", &common::random_keys(&["k1"]));
    let project = Project::create(conn, "Acme").await.unwrap();
    let victim = Bucket::create(
        conn,
        &keyring,
        new_bucket(project.id, "victim", "AKIAVICTIM", "victim-secret"),
    )
    .await
    .unwrap();
    let attacker = Bucket::create(
        conn,
        &keyring,
        new_bucket(project.id, "attacker", "AKIAATTACK", "attack-secret"),
    )
    .await
    .unwrap();

    // Someone with database access copies the victim's sealed secret into their own row.
    diesel::update(buckets::table.find(attacker.id))
        .set(buckets::secret_access_key_ciphertext.eq(&victim.secret_access_key_ciphertext))
        .execute(conn)
        .await
        .unwrap();
    let tampered = Bucket::find(conn, project.id, attacker.id)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(
        tampered.credentials(&keyring),
        Err(ModelError::Crypto(CryptoError::Rejected))
    ));
}

#[tokio::test]
async fn swapped_or_altered_credential_ciphertexts_are_rejected() {
    let db = common::database().await;
    let conn = &mut db.connect().await;
    let keyring = common::keyring("k1", &common::random_keys(&["k1"]));
    let project = Project::create(conn, "Acme").await.unwrap();
    let bucket = Bucket::create(
        conn,
        &keyring,
        new_bucket(project.id, "bucket-one", "AKIA1", "secret1"),
    )
    .await
    .unwrap();

    // Access key id and secret swapped within the row.
    diesel::update(buckets::table.find(bucket.id))
        .set((
            buckets::access_key_id_ciphertext.eq(&bucket.secret_access_key_ciphertext),
            buckets::secret_access_key_ciphertext.eq(&bucket.access_key_id_ciphertext),
        ))
        .execute(conn)
        .await
        .unwrap();
    let swapped = Bucket::find(conn, project.id, bucket.id)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(
        swapped.credentials(&keyring),
        Err(ModelError::Crypto(CryptoError::Rejected))
    ));

    // One bit flipped in the stored secret.
    let mut altered = bucket.secret_access_key_ciphertext.clone();
    altered[20] ^= 0x80;
    diesel::update(buckets::table.find(bucket.id))
        .set((
            buckets::access_key_id_ciphertext.eq(&bucket.access_key_id_ciphertext),
            buckets::secret_access_key_ciphertext.eq(&altered),
        ))
        .execute(conn)
        .await
        .unwrap();
    let flipped = Bucket::find(conn, project.id, bucket.id)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(
        flipped.credentials(&keyring),
        Err(ModelError::Crypto(CryptoError::Rejected))
    ));
}

#[tokio::test]
async fn key_rotation_reseals_every_secret_under_the_active_key() {
    let db = common::database().await;
    let conn = &mut db.connect().await;
    let keys = common::random_keys(&["old", "new"]);
    let old = common::keyring("old", &keys);
    let project = Project::create(conn, "Acme").await.unwrap();
    let bucket = Bucket::create(
        conn,
        &old,
        new_bucket(project.id, "bucket-one", "AKIAOLD", "old-secret"),
    )
    .await
    .unwrap();
    let signing = SecretString::from("whsec_test".to_owned());
    let endpoint = WebhookEndpoint::create(
        conn,
        &old,
        NewWebhookEndpoint {
            project_id: project.id,
            url: "https://example.com/hook",
            description: "",
            signing_secret: &signing,
        },
    )
    .await
    .unwrap();

    let new = common::keyring("new", &keys);
    let report = rotate_encryption_keys(conn, &new).await.unwrap();
    assert_eq!((report.buckets, report.webhook_endpoints), (1, 1));
    assert_eq!(
        rotate_encryption_keys(conn, &new).await.unwrap().buckets,
        0,
        "a second run has nothing to do"
    );

    let rotated = Bucket::find(conn, project.id, bucket.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rotated.encryption_key_id, "new");
    assert_ne!(
        rotated.secret_access_key_ciphertext,
        bucket.secret_access_key_ciphertext
    );
    // Only the new key is needed from now on.
    let new_only = common::keyring(
        "new",
        &keys
            .iter()
            .filter(|(k, _)| *k == "new")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    );
    assert_eq!(
        rotated
            .credentials(&new_only)
            .unwrap()
            .secret_access_key
            .expose_secret(),
        "old-secret"
    );
    let endpoint = WebhookEndpoint::list(conn, project.id)
        .await
        .unwrap()
        .into_iter()
        .find(|e| e.id == endpoint.id)
        .unwrap();
    assert_eq!(
        endpoint.signing_secret(&new_only).unwrap().expose_secret(),
        "whsec_test"
    );
}

#[tokio::test]
async fn a_bucket_with_jobs_is_not_deleted_and_the_refusal_counts_them() {
    let mut f = fixture().await;
    let (conn, project, bucket) = (&mut f.conn, f.project.clone(), f.bucket.clone());
    Zip::create(conn, new_zip(project.id, &bucket, &["a.txt"]))
        .await
        .unwrap();
    Zip::create(conn, new_zip(project.id, &bucket, &["b.txt"]))
        .await
        .unwrap();

    let refused = Bucket::delete(conn, project.id, bucket.id)
        .await
        .unwrap_err();
    assert_eq!(
        refused.to_string(),
        "2 zip job(s) still refer to this bucket; they keep its history"
    );
    assert!(
        Bucket::find(conn, project.id, bucket.id)
            .await
            .unwrap()
            .is_some()
    );

    let unused = Bucket::create(
        conn,
        &f.keyring,
        new_bucket(project.id, "bucket-two", "AKIA2", "s"),
    )
    .await
    .unwrap();
    Bucket::delete(conn, project.id, unused.id).await.unwrap();
    assert!(
        Bucket::find(conn, project.id, unused.id)
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn buckets_and_zips_of_another_project_are_invisible() {
    let db = common::database().await;
    let conn = &mut db.connect().await;
    let keyring = common::keyring("k1", &common::random_keys(&["k1"]));
    let a = Project::create(conn, "A").await.unwrap();
    let b = Project::create(conn, "B").await.unwrap();
    let bucket = Bucket::create(
        conn,
        &keyring,
        new_bucket(a.id, "shared-name", "AKIA1", "s"),
    )
    .await
    .unwrap();
    let zip = Zip::create(conn, new_zip(a.id, &bucket, &["a.txt"]))
        .await
        .unwrap();

    assert!(Bucket::find(conn, b.id, bucket.id).await.unwrap().is_none());
    assert!(
        Bucket::find_by_name(conn, b.id, Service::S3, "shared-name")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        Bucket::find_by_name(conn, a.id, Service::R2, "shared-name")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        Bucket::find_by_name(conn, a.id, Service::S3, "shared-name")
            .await
            .unwrap()
            .is_some()
    );
    assert!(Zip::find(conn, b.id, zip.id).await.unwrap().is_none());
    assert!(Zip::cancel(conn, b.id, zip.id).await.unwrap().is_none());
    assert!(matches!(
        Bucket::delete(conn, b.id, bucket.id).await,
        Err(zipkit_domain::models::DeleteBucketError::NotFound)
    ));

    // The database itself refuses a job pointing at another project's bucket.
    let mut foreign = new_zip(b.id, &bucket, &["a.txt"]);
    foreign.project_id = b.id;
    assert!(Zip::create(conn, foreign).await.is_err());
}

#[tokio::test]
async fn a_zip_is_stored_with_its_entries_in_order() {
    let mut f = fixture().await;
    let (conn, project, bucket) = (&mut f.conn, f.project.clone(), f.bucket.clone());
    let names = ["z.txt", "docs/résumé.pdf", "a/b/c.bin"];
    let zip = Zip::create(conn, new_zip(project.id, &bucket, &names))
        .await
        .unwrap();
    assert_eq!(zip.status, ZipStatus::None);
    assert_eq!(zip.files_total, 3);
    assert_eq!(zip.metadata["order_id"], "order_456");
    assert!(zip.published_at.is_none());

    let entries = Zip::entries(conn, zip.id).await.unwrap();
    let stored: Vec<&str> = entries.iter().map(|e| e.filename.as_str()).collect();
    assert_eq!(stored, names);
    assert_eq!(entries[1].url.as_str(), "https://example.com/1");

    Zip::mark_published(conn, zip.id).await.unwrap();
    assert!(
        Zip::find(conn, project.id, zip.id)
            .await
            .unwrap()
            .unwrap()
            .published_at
            .is_some()
    );
}

#[tokio::test]
async fn entry_outcomes_are_recorded_many_at_once() {
    use zipkit_domain::EntryState;
    use zipkit_domain::models::EntryOutcome;
    let mut f = fixture().await;
    let (conn, project, bucket) = (&mut f.conn, f.project.clone(), f.bucket.clone());
    let zip = Zip::create(conn, new_zip(project.id, &bucket, &["a", "b", "c"]))
        .await
        .unwrap();
    let done = |index, size, crc32| EntryOutcome {
        index,
        state: EntryState::Done,
        size: Some(size),
        crc32: Some(crc32),
        error_code: None,
        error_message: None,
    };
    let skipped = EntryOutcome {
        index: 1,
        state: EntryState::Skipped,
        size: None,
        crc32: None,
        error_code: Some("source_not_found".into()),
        error_message: Some("the source answered HTTP 404".into()),
    };
    Zip::record_entries(
        conn,
        zip.id,
        &[done(0, 5, 4_294_967_295), skipped, done(2, 0, 0)],
    )
    .await
    .unwrap();
    Zip::record_entries(conn, zip.id, &[]).await.unwrap();
    let entries = Zip::entries(conn, zip.id).await.unwrap();
    let read: Vec<_> = entries
        .iter()
        .map(|e| (e.state, e.size, e.crc32, e.error_code.as_deref()))
        .collect();
    assert_eq!(
        read,
        [
            (EntryState::Done, Some(5), Some(4_294_967_295), None),
            (EntryState::Skipped, None, None, Some("source_not_found")),
            (EntryState::Done, Some(0), Some(0), None),
        ]
    );
    assert_eq!(
        entries[1].error_message.as_deref(),
        Some("the source answered HTTP 404")
    );
}

#[tokio::test]
async fn placements_are_recorded_by_the_owner_only_kept_with_their_validator_and_cleared() {
    use zipkit_domain::models::{EntryPlacement, PlacedEnd};
    let mut f = fixture().await;
    let (conn, project, bucket) = (&mut f.conn, f.project.clone(), f.bucket.clone());
    let zip = Zip::create(conn, new_zip(project.id, &bucket, &["a", "b"]))
        .await
        .unwrap();
    Zip::claim(conn, zip.id, "worker-1", Duration::seconds(60))
        .await
        .unwrap()
        .unwrap();
    let start = EntryPlacement {
        index: 1,
        offset: 1000,
        deflated: false,
        zip64: true,
        source_validator: Some("\"v1\"".into()),
        entry_time: chrono::DateTime::from_timestamp(1_700_000_000, 0),
        end: None,
    };
    let first = EntryPlacement {
        index: 0,
        offset: 0,
        deflated: true,
        zip64: false,
        source_validator: None,
        entry_time: chrono::DateTime::from_timestamp(1_600_000_000, 0),
        end: Some(PlacedEnd {
            end: 1000,
            compressed_size: 900,
            archive_crc32: 4_294_967_295,
        }),
    };
    // Someone else's write changes nothing.
    Zip::record_placements(conn, zip.id, "worker-2", &[first.clone(), start.clone()])
        .await
        .unwrap();
    let placed = |entries: Vec<zipkit_domain::models::RecordedEntry>| -> Vec<_> {
        entries.into_iter().map(|e| e.placement).collect()
    };
    let recorded = Zip::recorded_entries(conn, zip.id, -1, i64::MAX)
        .await
        .unwrap();
    assert_eq!(placed(recorded), [None, None]);

    Zip::record_placements(conn, zip.id, "worker-1", &[first.clone(), start.clone()])
        .await
        .unwrap();
    let recorded = Zip::recorded_entries(conn, zip.id, -1, i64::MAX)
        .await
        .unwrap();
    assert_eq!(placed(recorded), [Some(first.clone()), Some(start.clone())]);
    // The end of entry 1 keeps the validator recorded with its start.
    let end = EntryPlacement {
        source_validator: None,
        end: Some(PlacedEnd {
            end: 99_000,
            compressed_size: 97_950,
            archive_crc32: 7,
        }),
        ..start.clone()
    };
    Zip::record_placements(conn, zip.id, "worker-1", std::slice::from_ref(&end))
        .await
        .unwrap();
    let recorded = Zip::recorded_entries(conn, zip.id, -1, i64::MAX)
        .await
        .unwrap();
    let ended = EntryPlacement {
        source_validator: start.source_validator.clone(),
        ..end
    };
    assert_eq!(placed(recorded), [Some(first), Some(ended)]);

    Zip::clear_placements(conn, zip.id).await.unwrap();
    let recorded = Zip::recorded_entries(conn, zip.id, -1, i64::MAX)
        .await
        .unwrap();
    assert_eq!(placed(recorded), [None, None]);
}

#[tokio::test]
async fn the_expected_size_is_stored_at_creation_and_recorded_again_by_the_owner_only() {
    let mut f = fixture().await;
    let (conn, project, bucket) = (&mut f.conn, f.project.clone(), f.bucket.clone());
    let unknown = Zip::create(conn, new_zip(project.id, &bucket, &["a"]))
        .await
        .unwrap();
    assert_eq!(Zip::expected_size(conn, unknown.id).await.unwrap(), None);
    let mut known = new_zip(project.id, &bucket, &["b"]);
    known.expected_size = Some(1234);
    let zip = Zip::create(conn, known).await.unwrap();
    assert_eq!(Zip::expected_size(conn, zip.id).await.unwrap(), Some(1234));

    // Nobody holds the job: nothing is written.
    Zip::record_expected_size(conn, zip.id, "worker-1", 999)
        .await
        .unwrap();
    assert_eq!(Zip::expected_size(conn, zip.id).await.unwrap(), Some(1234));
    Zip::claim(conn, zip.id, "worker-1", Duration::seconds(60))
        .await
        .unwrap()
        .unwrap();
    Zip::record_expected_size(conn, zip.id, "worker-2", 999)
        .await
        .unwrap();
    assert_eq!(Zip::expected_size(conn, zip.id).await.unwrap(), Some(1234));
    // The owner's value replaces it; a job without one gets its first.
    Zip::record_expected_size(conn, zip.id, "worker-1", 1000)
        .await
        .unwrap();
    assert_eq!(Zip::expected_size(conn, zip.id).await.unwrap(), Some(1000));
    Zip::claim(conn, unknown.id, "worker-1", Duration::seconds(60))
        .await
        .unwrap()
        .unwrap();
    Zip::record_expected_size(conn, unknown.id, "worker-1", 22)
        .await
        .unwrap();
    assert_eq!(
        Zip::expected_size(conn, unknown.id).await.unwrap(),
        Some(22)
    );
}

#[tokio::test]
async fn a_taken_idempotency_key_or_bucket_name_is_a_typed_conflict_that_stores_nothing() {
    let mut f = fixture().await;
    let (conn, project, bucket) = (&mut f.conn, f.project.clone(), f.bucket.clone());
    let keyed = || {
        let mut new = new_zip(project.id, &bucket, &["a.txt"]);
        new.idempotency = Some(("order-456".into(), vec![1; 32]));
        new
    };
    let first = Zip::create(conn, keyed()).await.unwrap();
    let again = Zip::create(conn, keyed()).await;
    assert!(
        matches!(again, Err(ModelError::IdempotencyKeyTaken)),
        "{again:?}"
    );
    let count: i64 = zipkit_domain::schema::zip_entries::table
        .count()
        .get_result(conn)
        .await
        .unwrap();
    assert_eq!(count, 1, "only the first job's entry is stored");
    assert_eq!(
        Zip::find_by_idempotency_key(conn, project.id, "order-456")
            .await
            .unwrap()
            .map(|z| z.id),
        Some(first.id)
    );

    let twin = Bucket::create(
        conn,
        &f.keyring,
        new_bucket(project.id, "bucket-one", "AKIA2", "t"),
    )
    .await;
    assert!(matches!(twin, Err(ModelError::BucketNameTaken)), "{twin:?}");
}

#[tokio::test]
async fn the_database_refuses_entry_names_that_differ_only_in_ascii_case() {
    let mut f = fixture().await;
    let (conn, project, bucket) = (&mut f.conn, f.project.clone(), f.bucket.clone());
    let result = Zip::create(
        conn,
        new_zip(project.id, &bucket, &["Report.pdf", "report.PDF"]),
    )
    .await;
    assert!(result.is_err());
    let count: i64 = zipkit_domain::schema::zips::table
        .count()
        .get_result(conn)
        .await
        .unwrap();
    assert_eq!(count, 0, "the transaction left nothing behind");
}

#[tokio::test]
async fn exactly_one_of_many_racing_workers_claims_a_job() {
    let db = common::database().await;
    let keyring = common::keyring("k1", &common::random_keys(&["k1"]));
    let zip_id = {
        let conn = &mut db.connect().await;
        let project = Project::create(conn, "Acme").await.unwrap();
        let bucket = Bucket::create(
            conn,
            &keyring,
            new_bucket(project.id, "bucket-one", "AKIA1", "s"),
        )
        .await
        .unwrap();
        Zip::create(conn, new_zip(project.id, &bucket, &["a.txt"]))
            .await
            .unwrap()
            .id
    };
    let mut claims = Vec::new();
    for worker in 0..8 {
        let mut conn = db.connect().await;
        claims.push(tokio::spawn(async move {
            Zip::claim(
                &mut conn,
                zip_id,
                &format!("worker-{worker}"),
                Duration::seconds(30),
            )
            .await
            .unwrap()
        }));
    }
    let mut winners = Vec::new();
    for claim in claims {
        if let Some(zip) = claim.await.unwrap() {
            winners.push(zip);
        }
    }
    assert_eq!(winners.len(), 1);
    assert_eq!(winners[0].status, ZipStatus::Processing);
    assert_eq!(winners[0].attempts, 1);
    assert!(winners[0].started_at.is_some());
}

#[tokio::test]
async fn an_expired_lease_can_be_taken_over_and_the_old_owner_can_no_longer_finish() {
    let mut f = fixture().await;
    let (conn, project, bucket) = (&mut f.conn, f.project.clone(), f.bucket.clone());
    let zip = Zip::create(conn, new_zip(project.id, &bucket, &["a.txt"]))
        .await
        .unwrap();

    Zip::claim(conn, zip.id, "w1", Duration::seconds(-1))
        .await
        .unwrap()
        .expect("first claim");
    let second = Zip::claim(conn, zip.id, "w2", Duration::seconds(30))
        .await
        .unwrap()
        .expect("expired lease is taken over");
    assert_eq!(second.attempts, 2);
    assert!(
        Zip::claim(conn, zip.id, "w3", Duration::seconds(30))
            .await
            .unwrap()
            .is_none(),
        "live lease is kept"
    );
    assert!(
        !Zip::heartbeat(conn, zip.id, "w1", Duration::seconds(30))
            .await
            .unwrap()
    );
    assert!(
        Zip::heartbeat(conn, zip.id, "w2", Duration::seconds(30))
            .await
            .unwrap()
    );

    let done = ZipOutcome::Succeeded {
        size: 123,
        etag: "\"abc-1\"".into(),
        entries: 1,
    };
    assert!(
        Zip::finish(conn, zip.id, "w1", &done)
            .await
            .unwrap()
            .is_none()
    );
    let finished = Zip::finish(conn, zip.id, "w2", &done)
        .await
        .unwrap()
        .expect("owner finishes");
    assert_eq!(finished.status, ZipStatus::Succeeded);
    assert_eq!(finished.result_size, Some(123));
    assert!(finished.lease_owner.is_none() && finished.finished_at.is_some());
    assert!(
        Zip::claim(conn, zip.id, "w4", Duration::seconds(30))
            .await
            .unwrap()
            .is_none(),
        "finished jobs stay finished"
    );
}

#[tokio::test]
async fn a_failed_job_keeps_its_error_and_cancel_is_idempotent() {
    let mut f = fixture().await;
    let (conn, project, bucket) = (&mut f.conn, f.project.clone(), f.bucket.clone());

    let failing = Zip::create(conn, new_zip(project.id, &bucket, &["a.txt"]))
        .await
        .unwrap();
    Zip::claim(conn, failing.id, "w1", Duration::seconds(30))
        .await
        .unwrap()
        .unwrap();
    let error = JobError {
        error_type: "invalid_request_error".into(),
        code: "source_not_found".into(),
        message: "the source answered 404".into(),
        param: Some("urls[0]".into()),
    };
    let failed = Zip::finish(conn, failing.id, "w1", &ZipOutcome::Failed(error))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(failed.status, ZipStatus::Failed);
    assert_eq!(failed.error_code.as_deref(), Some("source_not_found"));
    assert_eq!(failed.error_param.as_deref(), Some("urls[0]"));
    assert_eq!(
        Zip::cancel(conn, project.id, failed.id)
            .await
            .unwrap()
            .unwrap()
            .status,
        ZipStatus::Failed,
        "a finished job is not cancelled"
    );

    let pending = Zip::create(conn, new_zip(project.id, &bucket, &["b.txt"]))
        .await
        .unwrap();
    assert_eq!(
        Zip::cancel(conn, project.id, pending.id)
            .await
            .unwrap()
            .unwrap()
            .status,
        ZipStatus::Cancelled
    );
    assert_eq!(
        Zip::cancel(conn, project.id, pending.id)
            .await
            .unwrap()
            .unwrap()
            .status,
        ZipStatus::Cancelled
    );
    assert!(
        Zip::claim(conn, pending.id, "w1", Duration::seconds(30))
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn users_are_unique_by_email_ignoring_case_and_see_only_their_projects() {
    let db = common::database().await;
    let conn = &mut db.connect().await;
    let alice = User::create(conn, "Alice@Example.com", "$argon2id$placeholder")
        .await
        .unwrap();
    assert_eq!(alice.email, "alice@example.com");
    assert!(
        User::create(conn, "ALICE@example.com", "$argon2id$x")
            .await
            .is_err()
    );
    assert_eq!(
        User::find_by_email(conn, "alice@EXAMPLE.com")
            .await
            .unwrap()
            .unwrap()
            .id,
        alice.id
    );

    let mine = Project::create(conn, "Mine").await.unwrap();
    let theirs = Project::create(conn, "Theirs").await.unwrap();
    Project::add_member(conn, mine.id, alice.id, ProjectRole::Owner)
        .await
        .unwrap();
    Project::add_member(conn, mine.id, alice.id, ProjectRole::Owner)
        .await
        .unwrap();
    let projects = alice.projects(conn).await.unwrap();
    assert_eq!(
        projects.iter().map(|p| p.id).collect::<Vec<_>>(),
        vec![mine.id]
    );
    assert_eq!(
        Project::role_of(conn, mine.id, alice.id).await.unwrap(),
        Some(ProjectRole::Owner)
    );
    assert_eq!(
        Project::role_of(conn, theirs.id, alice.id).await.unwrap(),
        None
    );
}

#[tokio::test]
async fn a_dashboard_session_works_by_its_token_until_it_ends_or_expires() {
    use zipkit_domain::models::{LoginThrottle, Session};
    let mut fixture = fixture().await;
    let conn = &mut fixture.conn;
    let user = User::create(conn, "dana@example.com", "$argon2id$x")
        .await
        .expect("user");
    let (token, session) = Session::start(conn, user.id, Duration::hours(12))
        .await
        .expect("session");
    assert!(session.csrf_token.len() >= 32);
    let found = Session::find(conn, token.expose_secret())
        .await
        .expect("find")
        .expect("the session is live");
    assert_eq!((found.id, found.user_id), (session.id, user.id));
    assert!(
        Session::find(conn, "not-the-token")
            .await
            .expect("find")
            .is_none(),
        "only the token opens the session"
    );
    Session::end(conn, session.id).await.expect("end");
    assert!(
        Session::find(conn, token.expose_secret())
            .await
            .expect("find")
            .is_none()
    );

    let (expired, _) = Session::start(conn, user.id, Duration::seconds(-1))
        .await
        .expect("session");
    assert!(
        Session::find(conn, expired.expose_secret())
            .await
            .expect("find")
            .is_none()
    );

    use zipkit_domain::models::RecentFailures;
    let since = chrono::Utc::now() - Duration::minutes(15);
    for _ in 0..3 {
        LoginThrottle::record_failure(conn, "Dana@Example.com", "203.0.113.9")
            .await
            .expect("record");
    }
    LoginThrottle::record_failure(conn, "eve@example.com", "203.0.113.9")
        .await
        .expect("record");
    LoginThrottle::record_failure(conn, "dana@example.com", "198.51.100.4")
        .await
        .expect("record");
    assert_eq!(
        LoginThrottle::failures_since(conn, "dana@example.com", "203.0.113.9", since)
            .await
            .expect("count"),
        RecentFailures {
            account_from_address: 3,
            from_address: 4
        }
    );
    // The owner signing in from elsewhere clears only that address's failures for the account.
    LoginThrottle::clear(conn, "DANA@example.com", "198.51.100.4")
        .await
        .expect("clear");
    assert_eq!(
        LoginThrottle::failures_since(conn, "dana@example.com", "198.51.100.4", since)
            .await
            .expect("count"),
        RecentFailures {
            account_from_address: 0,
            from_address: 0
        }
    );
    assert_eq!(
        LoginThrottle::failures_since(conn, "dana@example.com", "203.0.113.9", since)
            .await
            .expect("count")
            .account_from_address,
        3
    );
    assert_eq!(
        LoginThrottle::forget_before(conn, chrono::Utc::now() + Duration::seconds(1))
            .await
            .expect("forget"),
        4
    );
}

#[tokio::test]
async fn a_shared_allowance_grants_requests_in_chunks_never_beyond_its_burst() {
    use zipkit_domain::models::{Grant, Quota, RateLimit};
    let f = fixture().await;
    let mut conn = f.conn;
    // One request a minute sustained, a burst of 10: chunks of 4 get 4, 4, then the 2 left.
    let quota = Quota {
        per_minute: 1,
        burst: 10,
    };
    let mut granted = Vec::new();
    loop {
        match RateLimit::take(&mut conn, "token:t", quota, 4)
            .await
            .expect("take")
        {
            Grant::Granted(n) => granted.push(n),
            Grant::Wait(wait) => {
                // The next request is a minute's interval away, less what has passed.
                assert!(
                    wait > std::time::Duration::from_secs(50)
                        && wait <= std::time::Duration::from_secs(60),
                    "{wait:?}"
                );
                break;
            }
        }
    }
    assert_eq!(granted, [4, 4, 2]);
    // Another key has its own allowance; asking for more than the burst gets the burst.
    assert_eq!(
        RateLimit::take(&mut conn, "token:u", quota, 50)
            .await
            .expect("take"),
        Grant::Granted(10)
    );
    assert!(matches!(
        RateLimit::take(&mut conn, "token:u", quota, 1)
            .await
            .expect("take"),
        Grant::Wait(_)
    ));
}

#[tokio::test]
async fn a_rate_above_a_million_a_second_grants_chunks_instead_of_failing() {
    use zipkit_domain::models::{Grant, Quota, RateLimit};
    let f = fixture().await;
    let mut conn = f.conn;
    // What a benchmark sets to take the limits out of the way: 60 µs-less intervals.
    let quota = Quota {
        per_minute: 100_000_000,
        burst: 100_000_000,
    };
    for _ in 0..3 {
        assert_eq!(
            RateLimit::take(&mut conn, "token:bench", quota, 32)
                .await
                .expect("no division by zero"),
            Grant::Granted(32)
        );
    }
}
