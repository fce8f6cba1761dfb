//! Control records: the transaction markers (commit/abort) of control batches.

use super::batch::{Record, be_i16, be_i32};
use crate::{Error, Result};

/// The type of a control record (key field `type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ControlType {
    /// Transaction abort marker (type 0).
    Abort,
    /// Transaction commit marker (type 1).
    Commit,
    /// Another control type (KRaft uses some internally), kept as its number.
    Unknown(i16),
}

impl ControlType {
    /// The type number on the wire.
    pub const fn id(self) -> i16 {
        match self {
            ControlType::Abort => 0,
            ControlType::Commit => 1,
            ControlType::Unknown(t) => t,
        }
    }

    /// The type for a number on the wire.
    pub const fn from_id(id: i16) -> ControlType {
        match id {
            0 => ControlType::Abort,
            1 => ControlType::Commit,
            t => ControlType::Unknown(t),
        }
    }
}

/// A parsed control record: key = (i16 version, i16 type), value for commit/abort markers =
/// (i16 version, i32 coordinator_epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct ControlRecord {
    /// Version of the key schema (0).
    pub version: i16,
    /// The control type.
    pub control_type: ControlType,
    /// The transaction coordinator's epoch (commit/abort markers; -1 for other types).
    pub coordinator_epoch: i32,
}

impl ControlRecord {
    /// A commit or abort marker (key and value version 0).
    pub fn new(control_type: ControlType, coordinator_epoch: i32) -> ControlRecord {
        ControlRecord {
            version: 0,
            control_type,
            coordinator_epoch,
        }
    }

    /// Parses the control record from a record of a control batch.
    pub fn from_record(record: &Record) -> Result<ControlRecord> {
        let key = record
            .key
            .as_deref()
            .filter(|k| k.len() >= 4)
            .ok_or_else(|| Error::corrupt("control record key shorter than 4 bytes"))?;
        let version = be_i16(key, 0);
        let control_type = ControlType::from_id(be_i16(key, 2));
        let coordinator_epoch = match control_type {
            ControlType::Abort | ControlType::Commit => {
                let value = record
                    .value
                    .as_deref()
                    .filter(|v| v.len() >= 6)
                    .ok_or_else(|| {
                        Error::corrupt("transaction marker value shorter than 6 bytes")
                    })?;
                be_i32(value, 2)
            }
            ControlType::Unknown(_) => -1,
        };
        Ok(ControlRecord {
            version,
            control_type,
            coordinator_epoch,
        })
    }

    /// The record key bytes.
    pub fn key_bytes(&self) -> [u8; 4] {
        let mut k = [0u8; 4];
        k[..2].copy_from_slice(&self.version.to_be_bytes());
        k[2..].copy_from_slice(&self.control_type.id().to_be_bytes());
        k
    }

    /// The record value bytes (marker version 0, coordinator epoch).
    pub fn value_bytes(&self) -> [u8; 6] {
        let mut v = [0u8; 6];
        v[2..].copy_from_slice(&self.coordinator_epoch.to_be_bytes());
        v
    }
}
