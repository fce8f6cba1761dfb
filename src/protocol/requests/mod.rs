//! Requests that several layers send, built and answered in one place, without I/O.
//!
//! * [`offset_fetch`]: OffsetFetch (committed offsets), sent by the admin client
//!   (`list_group_offsets`) and by a group member (`committed`, the consumer's starting
//!   positions).
//! * [`list_offsets`]: ListOffsets (offsets by time or position), sent by the admin client
//!   (`list_offsets`) and by the consumer's fetcher (position resets, `offsets_for_times`,
//!   beginning and end offsets).
//!
//! Each module builds the request for a negotiated version (the version-dependent layout and
//! fields live here, once) and reads the response into our own types, broker error codes
//! becoming [`Error`](crate::Error)s tagged with the API and partition. Sending, retries and
//! what a caller does with an error stay with the caller.

use crate::KafkaCode;
use crate::error::Error;
use crate::protocol::ApiKey;

pub(crate) mod list_offsets;
pub(crate) mod offset_fetch;

/// A broker error code as our error (`None` for no error), tagged with the API.
fn code_error(code: i16, api: ApiKey) -> Option<Error> {
    KafkaCode::from_i16(code).map(|c| Error::broker(c).api(api))
}
