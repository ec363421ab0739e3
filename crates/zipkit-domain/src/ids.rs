//! Typed ids: a `BucketId` can never be passed where a `ProjectId` is expected.

use std::fmt;
use std::str::FromStr;

use diesel::deserialize::{self, FromSql};
use diesel::pg::{Pg, PgValue};
use diesel::serialize::{self, Output, ToSql};
use diesel::sql_types;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! typed_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
            diesel::expression::AsExpression, diesel::deserialize::FromSqlRow,
        )]
        #[diesel(sql_type = sql_types::Uuid)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A fresh id. Version 7 UUIDs are time-ordered, which keeps b-tree inserts local.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            pub const fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            pub const fn as_uuid(&self) -> &Uuid {
                &self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl From<Uuid> for $name {
            fn from(uuid: Uuid) -> Self {
                Self(uuid)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }

        impl ToSql<sql_types::Uuid, Pg> for $name {
            fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> serialize::Result {
                <Uuid as ToSql<sql_types::Uuid, Pg>>::to_sql(&self.0, out)
            }
        }

        impl FromSql<sql_types::Uuid, Pg> for $name {
            fn from_sql(bytes: PgValue<'_>) -> deserialize::Result<Self> {
                <Uuid as FromSql<sql_types::Uuid, Pg>>::from_sql(bytes).map(Self)
            }
        }
    };
}

typed_id!(
    /// A zip job; its public `uuid`.
    ZipId
);
typed_id!(ProjectId);
typed_id!(UserId);
typed_id!(BucketId);
typed_id!(AccessTokenId);
typed_id!(WebhookEndpointId);
typed_id!(WebhookDeliveryId);
typed_id!(SessionId);
typed_id!(LoginFailureId);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_round_trips_through_its_text_form() {
        let id = ZipId::new();
        let parsed: ZipId = id.to_string().parse().expect("parses");
        assert_eq!(parsed, id);
    }

    proptest::proptest! {
        #[test]
        fn any_uuid_round_trips_as_a_zip_id(bytes in proptest::array::uniform16(proptest::num::u8::ANY)) {
            let id = ZipId::from_uuid(Uuid::from_bytes(bytes));
            proptest::prop_assert_eq!(id.to_string().parse::<ZipId>().ok(), Some(id));
            proptest::prop_assert_eq!(serde_json::from_str::<ZipId>(&serde_json::to_string(&id).unwrap()).ok(), Some(id));
        }

        #[test]
        fn text_that_is_not_a_uuid_is_refused(text in "[^0-9a-fA-F-]{1,40}") {
            proptest::prop_assert!(text.parse::<ZipId>().is_err());
        }
    }

    #[test]
    fn an_id_rejects_text_that_is_not_a_uuid() {
        assert!("not-a-uuid".parse::<ZipId>().is_err());
        assert!("".parse::<BucketId>().is_err());
    }

    #[test]
    fn an_id_serializes_as_a_bare_uuid_string() {
        let id = ProjectId::new();
        let json = serde_json::to_string(&id).expect("serializes");
        assert_eq!(json, format!("\"{id}\""));
    }
}
