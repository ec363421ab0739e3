//! The ZIP archives zipkit writes, as both the worker (which writes them) and the API (which
//! predicts them for a dry run) need them: the records (`format`), how each entry is stored
//! (`method`), what an archive's size adds up to before a byte is written (`layout`), and the
//! parts it goes up in (`parts`). No I/O here.

pub mod format;
pub mod layout;
pub mod method;
pub mod parts;
