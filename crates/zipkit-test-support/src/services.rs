//! Where the local services are. `scripts/services.sh up` writes the actual values to the `env`
//! file of its state folder (docs/DEVELOPMENT.md); the defaults match services already running on
//! their standard ports.

fn var(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

/// A superuser connection to the maintenance database, used to create and drop test databases.
pub fn postgres_admin_url() -> String {
    var(
        "ZIPKIT_TEST_POSTGRES_URL",
        "postgres://postgres@127.0.0.1:5432/postgres",
    )
}

/// `amqp://user:password@host:port` without a vhost.
pub fn amqp_base_url() -> String {
    var("ZIPKIT_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672")
}

/// The RabbitMQ management API, used to create and delete vhosts.
pub fn rabbitmq_api_url() -> String {
    var(
        "ZIPKIT_TEST_RABBITMQ_API",
        "http://guest:guest@127.0.0.1:15672",
    )
}

/// The S3-compatible store (s3s-fs) and its credentials.
pub fn s3_endpoint() -> String {
    var("ZIPKIT_TEST_S3_ENDPOINT", "http://127.0.0.1:9900")
}

pub fn s3_access_key() -> String {
    var("ZIPKIT_TEST_S3_ACCESS_KEY", "zipkit-dev")
}

pub fn s3_secret_key() -> String {
    var("ZIPKIT_TEST_S3_SECRET_KEY", "zipkit-dev-secret")
}

/// The egress policy's settings for tests: the store, sources and receivers are on loopback,
/// which production's policy refuses, so loopback (and only loopback) is listed.
pub fn loopback_egress() -> zipkit_egress::EgressSettings {
    zipkit_egress::EgressSettings {
        allowed_networks: ["127.0.0.0/8", "::1/128"]
            .map(|n| n.parse().expect("a CIDR"))
            .into(),
        allowed_hosts: vec![],
    }
}

/// Replaces the database name of a `postgres://` URL.
pub fn with_database(url: &str, database: &str) -> String {
    let mut parsed = url::Url::parse(url).expect("ZIPKIT_TEST_POSTGRES_URL is a URL");
    parsed.set_path(&format!("/{database}"));
    parsed.to_string()
}

/// `host:port` of RabbitMQ's AMQP listener.
pub fn amqp_host_port() -> String {
    let url = url::Url::parse(&amqp_base_url()).expect("ZIPKIT_TEST_AMQP_URL is a URL");
    format!(
        "{}:{}",
        url.host_str().unwrap_or("127.0.0.1"),
        url.port().unwrap_or(5672)
    )
}
