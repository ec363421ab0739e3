//! Closed sets of values stored as `text` columns (with a CHECK constraint in SQL).

use std::fmt;
use std::str::FromStr;

use diesel::deserialize::{self, FromSql};
use diesel::pg::{Pg, PgValue};
use diesel::serialize::{self, Output, ToSql};
use diesel::sql_types::Text;
use serde::{Deserialize, Serialize};

/// A text value outside an enum's set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} `{value}`; expected one of: {expected}")]
pub struct UnknownVariant {
    pub kind: &'static str,
    pub value: String,
    pub expected: &'static str,
}

macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident as $kind:literal { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize,
            diesel::expression::AsExpression, diesel::deserialize::FromSqlRow,
        )]
        #[diesel(sql_type = Text)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub const fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownVariant;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(UnknownVariant {
                        kind: $kind,
                        value: s.to_owned(),
                        expected: concat!($($text, " "),+).trim_ascii_end(),
                    }),
                }
            }
        }

        impl ToSql<Text, Pg> for $name {
            fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> serialize::Result {
                <str as ToSql<Text, Pg>>::to_sql(self.as_str(), out)
            }
        }

        impl FromSql<Text, Pg> for $name {
            fn from_sql(bytes: PgValue<'_>) -> deserialize::Result<Self> {
                let text = <String as FromSql<Text, Pg>>::from_sql(bytes)?;
                Ok(text.parse()?)
            }
        }
    };
}

text_enum!(
    /// Where a bucket lives.
    #[derive(Default)]
    Service as "service" { #[default] S3 => "s3", R2 => "r2" }
);

text_enum!(
    /// A zip job's lifecycle: `none` → `processing` → `succeeded` | `failed` | `cancelled`.
    ZipStatus as "status" {
        None => "none",
        Processing => "processing",
        Succeeded => "succeeded",
        Failed => "failed",
        Cancelled => "cancelled",
    }
);

impl ZipStatus {
    /// A job in a terminal state never changes again.
    pub const fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

text_enum!(
    /// How entries are compressed: `auto` stores already-compressed types and deflates the rest.
    #[derive(Default)]
    Compression as "compression" { #[default] Auto => "auto", Store => "store", Deflate => "deflate" }
);

text_enum!(
    /// What one bad source does to the job.
    #[derive(Default)]
    OnError as "on_error" { #[default] Fail => "fail", Skip => "skip" }
);

text_enum!(
    /// One entry's progress inside a job.
    EntryState as "entry state" { Pending => "pending", Done => "done", Skipped => "skipped", Failed => "failed" }
);

text_enum!(
    /// A member's role in a project.
    ProjectRole as "role" { Owner => "owner", Member => "member" }
);

text_enum!(
    /// A webhook delivery's state across its attempts.
    DeliveryState as "delivery state" { Pending => "pending", Succeeded => "succeeded", Failed => "failed" }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_round_trips_through_its_text() {
        for status in ZipStatus::ALL {
            assert_eq!(status.as_str().parse::<ZipStatus>(), Ok(*status));
        }
        for service in Service::ALL {
            assert_eq!(service.to_string().parse::<Service>(), Ok(*service));
        }
    }

    #[test]
    fn unknown_text_names_the_expected_values() {
        let err = "gcs".parse::<Service>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown service `gcs`; expected one of: s3 r2"
        );
    }

    #[test]
    fn serde_uses_the_same_text_as_sql() {
        assert_eq!(
            serde_json::to_string(&Compression::Deflate).unwrap(),
            "\"deflate\""
        );
        assert_eq!(
            serde_json::from_str::<OnError>("\"skip\"").unwrap(),
            OnError::Skip
        );
        assert!(serde_json::from_str::<Service>("\"S3\"").is_err());
    }

    #[test]
    fn defaults_match_the_api_contract() {
        assert_eq!(Service::default(), Service::S3);
        assert_eq!(Compression::default(), Compression::Auto);
        assert_eq!(OnError::default(), OnError::Fail);
    }

    #[test]
    fn only_finished_statuses_are_terminal() {
        assert!(!ZipStatus::None.is_terminal());
        assert!(!ZipStatus::Processing.is_terminal());
        assert!(ZipStatus::Succeeded.is_terminal());
        assert!(ZipStatus::Cancelled.is_terminal());
    }
}
