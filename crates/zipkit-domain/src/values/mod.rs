//! Values parsed once at the edge ("parse, don't validate"): once a request became these types,
//! nothing downstream checks them again.

mod bucket_name;
mod entry_name;
mod object_key;
mod source_url;
mod windows_names;

pub use bucket_name::{BucketName, BucketNameError};
pub use entry_name::{EntryName, EntryNameError, MAX_ENTRY_NAME_BYTES, MAX_SEGMENT_BYTES};
pub use object_key::{MAX_OBJECT_KEY_BYTES, ObjectKey, ObjectKeyError};
pub use source_url::{MAX_SOURCE_URL_BYTES, SourceUrl, SourceUrlError};
pub use windows_names::{
    MAX_WINDOWS_PATH, RewriteError, WINDOWS_SAFE_RULE, WindowsNameProblem, WindowsSafeNames,
};

/// Implements the read-only accessors every parsed text value shares.
macro_rules! text_value {
    ($name:ident) => {
        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0.into()
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

        impl TryFrom<String> for $name {
            type Error = <$name as std::str::FromStr>::Err;

            fn try_from(value: String) -> Result<Self, Self::Error> {
                value.parse()
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_ref())
            }
        }
    };
}
pub(crate) use text_value;
