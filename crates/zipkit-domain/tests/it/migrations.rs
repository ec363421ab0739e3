//! Migrations against a real PostgreSQL: they apply on an empty database, every `down.sql`
//! reverts its `up.sql`, and applying them again gives the same schema.

use diesel::QueryableByName;
use diesel::sql_types::Text;
use diesel_async::RunQueryDsl;
use secrecy::SecretString;
use zipkit_domain::db::{revert_all_migrations, run_migrations};
use zipkit_test_support::TestDatabase;

#[derive(QueryableByName, Debug, PartialEq, Eq)]
struct Column {
    #[diesel(sql_type = Text)]
    description: String,
}

/// Every table, column, type, nullability, constraint and index in `public`, as sorted text.
async fn schema_of(db: &TestDatabase) -> Vec<String> {
    let mut conn = db.connect().await;
    let rows: Vec<Column> = diesel::sql_query(
        "SELECT table_name || '.' || column_name || ' ' || data_type || ' ' || is_nullable || ' ' || coalesce(column_default, '') AS description
           FROM information_schema.columns
          WHERE table_schema = 'public' AND table_name <> '__diesel_schema_migrations'
         UNION ALL
         SELECT conrelid::regclass::text || ' ' || pg_get_constraintdef(oid) FROM pg_constraint
          WHERE connamespace = 'public'::regnamespace AND conrelid <> '__diesel_schema_migrations'::regclass
         UNION ALL
         SELECT indexdef FROM pg_indexes WHERE schemaname = 'public' AND tablename <> '__diesel_schema_migrations'
         ORDER BY 1",
    )
    .load(&mut conn)
    .await
    .expect("read the schema");
    rows.into_iter().map(|c| c.description).collect()
}

#[tokio::test]
async fn migrations_apply_on_an_empty_database_and_every_down_reverts_its_up() {
    let db = TestDatabase::empty().await;
    let url = SecretString::from(db.url().to_owned());

    let applied = run_migrations(&url).await.expect("migrations apply");
    let on_disk = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../../migrations"))
        .expect("migrations/")
        .filter(|e| e.as_ref().is_ok_and(|e| e.path().is_dir()))
        .count();
    assert_eq!(
        applied.len(),
        on_disk,
        "every migration in migrations/: {applied:?}"
    );
    let first = schema_of(&db).await;
    for table in [
        "users",
        "projects",
        "project_members",
        "access_tokens",
        "buckets",
        "zips",
        "zip_entries",
        "zip_parts",
        "webhook_endpoints",
        "webhook_deliveries",
        "webhook_delivery_attempts",
        "dashboard_sessions",
        "login_failures",
    ] {
        assert!(
            first.iter().any(|c| c.starts_with(&format!("{table}."))),
            "table {table} missing"
        );
    }

    let reverted = revert_all_migrations(&url)
        .await
        .expect("every down.sql runs");
    assert_eq!(reverted.len(), on_disk);
    let left = schema_of(&db).await;
    assert!(
        left.is_empty(),
        "down.sql files left objects behind: {left:?}"
    );

    let reapplied = run_migrations(&url).await.expect("migrations apply again");
    assert_eq!(reapplied, applied);
    assert_eq!(schema_of(&db).await, first, "redo changed the schema");

    assert!(
        run_migrations(&url).await.expect("no-op run").is_empty(),
        "nothing left to apply"
    );
}
