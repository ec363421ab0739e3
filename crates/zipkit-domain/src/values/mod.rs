//! Values parsed once at the edge ("parse, don't validate"): once a request became these types,
//! nothing downstream checks them again. They are stored as `text` columns and read back as
//! the same types (`ToSql`/`FromSql`), so rows carry them typed to the worker and the views.

mod bucket_name;
mod entry_name;
mod key_filter;
mod object_key;
mod source_item;
mod source_url;
mod windows_names;

pub use bucket_name::{BucketName, BucketNameError};
pub use entry_name::{EntryName, EntryNameError, MAX_ENTRY_NAME_BYTES, MAX_SEGMENT_BYTES};
pub use key_filter::{KeyFilter, MAX_PATTERN_BYTES, MAX_PATTERNS, PatternError};
pub use object_key::{MAX_OBJECT_KEY_BYTES, ObjectKey, ObjectKeyError};
pub use source_item::{MAX_DECLARED_SIZE, SourceItem, parse_declared_size, parse_entry_time};
pub use source_url::{
    BUCKET_SCHEME, MAX_SOURCE_KEY_BYTES, MAX_SOURCE_URL_BYTES, SourceLocation, SourceUrl,
    SourceUrlError,
};
pub use windows_names::{
    MAX_WINDOWS_PATH, RewriteError, WINDOWS_SAFE_RULE, WindowsNameProblem, WindowsSafeNames,
};

/// Implements what every parsed text value shares: parsing through `FromStr`/`TryFrom<String>`
/// with its own error, the read-only accessors, JSON and the `text` column. Written as stored,
/// and read back as stored unless the type says `custom_read` and reads its column itself.
macro_rules! text_value {
    ($name:ident, $error:ty) => {
        $crate::values::text_value!($name, $error, custom_read);

        impl $name {
            /// Read back as stored: only parsed values are ever written, so the text is not
            /// checked again (a rule made stricter later must not make old rows unreadable).
            pub(crate) fn from_stored(text: String) -> Self {
                Self(text.into())
            }
        }

        impl diesel::deserialize::FromSql<diesel::sql_types::Text, diesel::pg::Pg> for $name {
            fn from_sql(value: diesel::pg::PgValue<'_>) -> diesel::deserialize::Result<Self> {
                let text = <String as diesel::deserialize::FromSql<
                    diesel::sql_types::Text,
                    diesel::pg::Pg,
                >>::from_sql(value)?;
                Ok(Self::from_stored(text))
            }
        }
    };
    ($name:ident, $error:ty, custom_read) => {
        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0.into()
            }
        }

        impl std::str::FromStr for $name {
            type Err = $error;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = $error;

            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::parse(&value)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl diesel::serialize::ToSql<diesel::sql_types::Text, diesel::pg::Pg> for $name {
            fn to_sql<'b>(
                &'b self,
                out: &mut diesel::serialize::Output<'b, '_, diesel::pg::Pg>,
            ) -> diesel::serialize::Result {
                <str as diesel::serialize::ToSql<diesel::sql_types::Text, diesel::pg::Pg>>::to_sql(
                    &self.0, out,
                )
            }
        }
    };
}
pub(crate) use text_value;
