//! A record's place in the change stream, which sinks that apply state use
//! as a version: a write is applied only if no later position has been
//! applied to the same key.

use std::fmt;

use crate::{Lsn, SourceInfo};

/// Where a change stands in the stream: its transaction's commit LSN, then
/// its position within the transaction. Commit LSNs grow in commit order,
/// so a later change always has a greater `Position`, and the same change
/// read again after a restart has the same one.
///
/// Several records can share a position (a plugin may turn one change into
/// several): a guard should refuse only positions *lower* than the stored
/// one, so that a replay of the same position writes the same data again.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    /// LSN of the transaction's commit record.
    pub commit_lsn: Lsn,
    /// Position of the change within its transaction, from 0.
    pub seq: u32,
}

impl Position {
    /// The position as one number that orders the same way.
    pub fn as_u128(self) -> u128 {
        (u128::from(self.commit_lsn.0) << 32) | u128::from(self.seq)
    }

    /// The position as 24 upper-case hex digits (16 for the LSN, 8 for the
    /// sequence), so that comparing the texts compares the positions: for
    /// stores whose scripts have no 64-bit integers (Redis Lua numbers are
    /// doubles).
    pub fn to_hex(self) -> String {
        format!("{:016X}{:08X}", self.commit_lsn.0, self.seq)
    }

    /// Reads [`to_hex`](Self::to_hex)'s text back.
    pub fn from_hex(text: &str) -> Option<Position> {
        if text.len() != 24 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        Some(Position {
            commit_lsn: Lsn(u64::from_str_radix(&text[..16], 16).ok()?),
            seq: u32::from_str_radix(&text[16..], 16).ok()?,
        })
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.commit_lsn, self.seq)
    }
}

impl SourceInfo {
    /// The change's [`Position`] in the stream.
    pub fn position(&self) -> Position {
        Position {
            commit_lsn: self.commit_lsn,
            seq: self.seq,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_text_orders_like_the_position() {
        let positions = [
            Position {
                commit_lsn: Lsn(1),
                seq: 0,
            },
            Position {
                commit_lsn: Lsn(1),
                seq: 0xFFFF_FFFF,
            },
            Position {
                commit_lsn: Lsn(2),
                seq: 0,
            },
            Position {
                commit_lsn: Lsn(0x1_0000_0000),
                seq: 3,
            },
            Position {
                commit_lsn: Lsn(u64::MAX),
                seq: u32::MAX,
            },
        ];
        for pair in positions.windows(2) {
            assert!(pair[0] < pair[1]);
            assert!(pair[0].to_hex() < pair[1].to_hex());
            assert!(pair[0].as_u128() < pair[1].as_u128());
        }
        for p in positions {
            assert_eq!(Position::from_hex(&p.to_hex()), Some(p));
        }
        assert_eq!(Position::from_hex("xyz"), None);
    }
}
