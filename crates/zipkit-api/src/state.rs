//! What every request handler can reach.

use zipkit_domain::crypto::KeyRing;
use zipkit_domain::db::PgPool;
use zipkit_runtime::broker::Broker;

#[derive(Debug)]
pub struct AppState {
    pub pool: PgPool,
    pub broker: Broker,
    pub keyring: KeyRing,
}
