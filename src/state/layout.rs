//! The bytes of one record file: a fixed file header, then two slots A and B, each holding a
//! complete, checksummed, sequence-numbered copy of the volume's record (or a tombstone: no
//! record). Pure: no I/O.
//!
//! ```text
//! offset 0          file header, 32 bytes:  "dvdi-checkpoint v2 cap 00000400\n"
//! offset 32         slot A (at most `cap` bytes)
//! offset 32 + cap   slot B (at most `cap` bytes)
//!
//! slot: "slot 0000000000000007 len 000001a2 crc 1c291ca3\n" <len bytes of JSON> "\n"
//! ```
//!
//! The current record is the valid slot with the higher sequence number; a change is written
//! into the *other* slot with the next number, so a write cut at any byte leaves the current slot
//! as it was and the cut one fails its checksum. The header is written once, when the file is
//! made whole (never in place), so it is never cut. Everything is ASCII apart from the JSON, so
//! `cat` shows an operator both copies.

use std::ops::Range;

/// Length of the file header.
pub(crate) const FILE_HEADER_LEN: usize = 32;
/// Length of a slot's header (its payload follows, then a newline).
const SLOT_HEADER_LEN: usize = 48;
/// The slot header bytes covered by the checksum (all but the checksum itself).
const SLOT_CHECKED_LEN: usize = 34;
/// Bytes a slot takes beyond its payload.
const SLOT_OVERHEAD: usize = SLOT_HEADER_LEN + 1;
/// The smallest slot capacity: both slots of a typical record (a few hundred bytes) and the file
/// header fit one page.
pub(crate) const MIN_CAP: u32 = 1024;
/// The largest slot capacity accepted when reading (a record of a million users fits).
const MAX_CAP: u32 = 1 << 30;
const FILE_MAGIC: &[u8] = b"dvdi-checkpoint v2 cap ";
const SLOT_MAGIC: &[u8] = b"slot ";

/// Why a record file cannot be read; the file is left as it is.
#[derive(Debug, thiserror::Error)]
pub enum Damage {
    /// Neither this format's header nor a JSON record of the first layout.
    #[error("it starts with neither a checkpoint header nor a JSON record")]
    Header,
    /// Both slots fail their checksum or are cut short: the file was damaged after it was written
    /// (a write cut short damages only the slot that is not current).
    #[error("neither of its two slots holds a complete record")]
    NoValidSlot,
    /// Both slots claim the same sequence number, which no writer produces.
    #[error("both of its slots claim sequence number {0}")]
    SameSequence(u64),
    /// The current slot's record is not valid JSON for this format.
    #[error("its record is not valid JSON for this format")]
    Json(#[source] serde_json::Error),
}

/// Which slot holds the current state, and its sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Current {
    /// 0 for slot A, 1 for slot B.
    pub index: usize,
    /// Its sequence number; the next write carries `seq + 1`.
    pub seq: u64,
}

/// What a record file holds.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decoded {
    /// An empty file: no record (this layout never leaves one, but it means nothing else).
    Empty,
    /// A record of the first layout: the whole file is its JSON (first byte `{`).
    Legacy,
    /// This layout.
    Slots {
        /// The slot capacity, fixed for the file's life.
        cap: u32,
        /// The current slot.
        current: Current,
        /// Where the current record's JSON lies in the bytes; `None` for a tombstone.
        payload: Option<Range<usize>>,
    },
}

/// Reads what `bytes` (a whole record file) holds.
pub(crate) fn decode(bytes: &[u8]) -> Result<Decoded, Damage> {
    if bytes.is_empty() {
        return Ok(Decoded::Empty);
    }
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
        return Ok(Decoded::Legacy);
    }
    let cap = file_cap(bytes).ok_or(Damage::Header)?;
    let a = slot_at(bytes, FILE_HEADER_LEN, cap);
    let b = slot_at(bytes, FILE_HEADER_LEN + cap as usize, cap);
    // The newer slot is the current one when its checksum holds (checked first, and the other
    // only when it fails: a change cut short).
    let mut slots = [(0, a), (1, b)];
    if let (Some(a), Some(b)) = (&slots[0].1, &slots[1].1) {
        if a.seq == b.seq && a.valid(bytes) && b.valid(bytes) {
            return Err(Damage::SameSequence(a.seq));
        }
    }
    slots.sort_by_key(|(_, s)| std::cmp::Reverse(s.as_ref().map(|s| s.seq)));
    let (index, slot) = slots
        .into_iter()
        .find_map(|(i, s)| s.filter(|s| s.valid(bytes)).map(|s| (i, s)))
        .ok_or(Damage::NoValidSlot)?;
    Ok(Decoded::Slots {
        cap,
        current: Current {
            index,
            seq: slot.seq,
        },
        payload: (!slot.payload.is_empty()).then_some(slot.payload),
    })
}

/// The capacity the file header states, when the header is whole and sane.
fn file_cap(bytes: &[u8]) -> Option<u32> {
    let header = bytes.get(..FILE_HEADER_LEN)?;
    let digits = header.strip_prefix(FILE_MAGIC)?.strip_suffix(b"\n")?;
    let cap = hex(digits)?;
    let cap = u32::try_from(cap).ok()?;
    ((MIN_CAP..=MAX_CAP).contains(&cap) && cap.is_power_of_two()).then_some(cap)
}

/// A slot whose header is whole and whose payload is all there; its checksum is checked apart.
struct Slot {
    seq: u64,
    crc: u32,
    /// The header bytes the checksum covers.
    checked: Range<usize>,
    payload: Range<usize>,
}

impl Slot {
    fn valid(&self, bytes: &[u8]) -> bool {
        crc32(&[&bytes[self.checked.clone()], &bytes[self.payload.clone()]]) == self.crc
    }
}

/// The slot at `offset` when its header is whole and its payload all there.
fn slot_at(bytes: &[u8], offset: usize, cap: u32) -> Option<Slot> {
    let slot = bytes.get(offset..)?;
    let header = slot.get(..SLOT_HEADER_LEN)?;
    let rest = header.strip_prefix(SLOT_MAGIC)?;
    let (seq, rest) = (rest.get(..16)?, rest.get(16..)?);
    let rest = rest.strip_prefix(b" len ")?;
    let (len, rest) = (rest.get(..8)?, rest.get(8..)?);
    let rest = rest.strip_prefix(b" crc ")?;
    let (crc, rest) = (rest.get(..8)?, rest.get(8..)?);
    if rest != b"\n" {
        return None;
    }
    let len = usize::try_from(hex(len)?).ok()?;
    if len + SLOT_OVERHEAD > cap as usize || slot.get(SLOT_HEADER_LEN + len) != Some(&b'\n') {
        return None;
    }
    let start = offset + SLOT_HEADER_LEN;
    Some(Slot {
        seq: hex(seq)?,
        crc: u32::try_from(hex(crc)?).ok()?,
        checked: offset..offset + SLOT_CHECKED_LEN,
        payload: start..start + len,
    })
}

/// A lowercase hexadecimal number of any width up to 16 digits.
fn hex(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 16 {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| {
        let v = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            _ => return None,
        };
        Some(n << 4 | u64::from(v))
    })
}

/// Whether a slot holding `payload_len` bytes fits `cap`.
pub(crate) fn fits(payload_len: usize, cap: u32) -> bool {
    payload_len + SLOT_OVERHEAD <= cap as usize
}

/// The capacity for a new file whose record is `payload_len` bytes: room for the record to double
/// before the file must be made anew.
pub(crate) fn cap_for(payload_len: usize) -> u32 {
    let want = (payload_len + SLOT_OVERHEAD).saturating_mul(2);
    u32::try_from(want.next_power_of_two())
        .unwrap_or(MAX_CAP)
        .clamp(MIN_CAP, MAX_CAP)
}

/// Where slot `index` (0 or 1) starts.
pub(crate) fn slot_offset(cap: u32, index: usize) -> u64 {
    FILE_HEADER_LEN as u64 + index as u64 * u64::from(cap)
}

/// A slot holding `payload` (empty: a tombstone) under sequence number `seq`.
pub(crate) fn slot(seq: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + SLOT_OVERHEAD);
    push_slot(&mut out, seq, payload);
    out
}

fn push_slot(out: &mut Vec<u8>, seq: u64, payload: &[u8]) {
    let start = out.len();
    out.extend_from_slice(SLOT_MAGIC);
    push_hex(out, seq, 16);
    out.extend_from_slice(b" len ");
    push_hex(out, payload.len() as u64, 8);
    let sum = crc32(&[&out[start..], payload]);
    out.extend_from_slice(b" crc ");
    push_hex(out, u64::from(sum), 8);
    out.push(b'\n');
    debug_assert_eq!(out.len() - start, SLOT_HEADER_LEN);
    out.extend_from_slice(payload);
    out.push(b'\n');
}

/// `n` as `width` lowercase hexadecimal digits.
fn push_hex(out: &mut Vec<u8>, n: u64, width: u32) {
    for shift in (0..width).rev() {
        out.push(b"0123456789abcdef"[(n >> (shift * 4) & 0xf) as usize]);
    }
}

/// A whole new file: the header for `cap`, then slot A holding `payload` under `seq`.
pub(crate) fn file(cap: u32, seq: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(FILE_HEADER_LEN + payload.len() + SLOT_OVERHEAD);
    out.extend_from_slice(FILE_MAGIC);
    push_hex(&mut out, u64::from(cap), 8);
    out.push(b'\n');
    debug_assert_eq!(out.len(), FILE_HEADER_LEN);
    push_slot(&mut out, seq, payload);
    out
}

/// CRC-32 (IEEE 802.3, as zlib) of the parts one after the other, eight bytes a step
/// ("slicing by 8"): recovery checks one slot of every volume.
fn crc32(parts: &[&[u8]]) -> u32 {
    let mut crc = !0u32;
    for part in parts {
        let mut chunks = part.chunks_exact(8);
        for c in &mut chunks {
            let lo = crc ^ u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            crc = CRC_TABLES[7][(lo & 0xff) as usize]
                ^ CRC_TABLES[6][(lo >> 8 & 0xff) as usize]
                ^ CRC_TABLES[5][(lo >> 16 & 0xff) as usize]
                ^ CRC_TABLES[4][(lo >> 24) as usize]
                ^ CRC_TABLES[3][c[4] as usize]
                ^ CRC_TABLES[2][c[5] as usize]
                ^ CRC_TABLES[1][c[6] as usize]
                ^ CRC_TABLES[0][c[7] as usize];
        }
        for &b in chunks.remainder() {
            crc = CRC_TABLES[0][((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8);
        }
    }
    !crc
}

/// Table `k` gives the CRC of a byte followed by `k` zero bytes.
const CRC_TABLES: [[u32; 256]; 8] = {
    let mut tables = [[0u32; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        tables[0][i] = c;
        i += 1;
    }
    let mut t = 1;
    while t < 8 {
        let mut i = 0;
        while i < 256 {
            let prev = tables[t - 1][i];
            tables[t][i] = (prev >> 8) ^ tables[0][(prev & 0xff) as usize];
            i += 1;
        }
        t += 1;
    }
    tables
};

#[cfg(test)]
mod tests {
    use super::*;

    fn current(bytes: &[u8]) -> (u64, Option<Vec<u8>>) {
        match decode(bytes).unwrap() {
            Decoded::Slots {
                current, payload, ..
            } => (current.seq, payload.map(|p| bytes[p].to_vec())),
            other => panic!("{other:?}"),
        }
    }

    /// `base` with `write` applied at `offset`, cut after `cut` bytes.
    fn torn(base: &[u8], offset: usize, write: &[u8], cut: usize) -> Vec<u8> {
        let mut out = base.to_vec();
        let end = offset + cut;
        if out.len() < end {
            out.resize(end, 0);
        }
        out[offset..end].copy_from_slice(&write[..cut]);
        out
    }

    #[test]
    fn crc_matches_the_standard_check_value() {
        assert_eq!(crc32(&[b"123456789"]), 0xcbf4_3926);
        assert_eq!(crc32(&[b"1234", b"56789"]), 0xcbf4_3926);
        let long: Vec<u8> = (0..=255).collect();
        let bytewise = long.iter().fold(!0u32, |c, &b| {
            CRC_TABLES[0][((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8)
        });
        assert_eq!(crc32(&[&long[..3], &long[3..]]), !bytewise);
    }

    #[test]
    fn a_new_file_holds_its_record_in_slot_a() {
        let f = file(MIN_CAP, 1, b"{\"x\":1}");
        assert_eq!(current(&f), (1, Some(b"{\"x\":1}".to_vec())));
        assert_eq!(current(&file(MIN_CAP, 0, b"")), (0, None));
    }

    /// Every write of a sequence of changes, cut at every byte: the file reads as the state before
    /// the write until the last byte is written, then as the state after it.
    #[test]
    fn a_write_cut_at_any_byte_reads_as_the_state_before_it() {
        let changes: [&[u8]; 5] = [b"{\"a\":2}", b"", b"{\"bb\":3}", b"{\"c\":\"long\"}", b""];
        let mut bytes = file(MIN_CAP, 1, b"{\"a\":1}");
        for (i, change) in changes.iter().enumerate() {
            let Decoded::Slots {
                cap, current: cur, ..
            } = decode(&bytes).unwrap()
            else {
                panic!()
            };
            let before = current(&bytes);
            let write = slot(cur.seq + 1, change);
            let offset = slot_offset(cap, 1 - cur.index) as usize;
            for cut in 0..write.len() {
                assert_eq!(
                    current(&torn(&bytes, offset, &write, cut)),
                    before,
                    "change {i} cut at {cut}"
                );
            }
            bytes = torn(&bytes, offset, &write, write.len());
            let after = (cur.seq + 1, (!change.is_empty()).then(|| change.to_vec()));
            assert_eq!(current(&bytes), after, "change {i} whole");
        }
    }

    #[test]
    fn damage_to_both_slots_or_the_header_is_reported() {
        let mut bytes = file(MIN_CAP, 1, b"{}");
        let two = slot(2, b"{\"y\":1}");
        bytes = torn(&bytes, slot_offset(MIN_CAP, 1) as usize, &two, two.len());
        let mut both = bytes.clone();
        both[FILE_HEADER_LEN + SLOT_HEADER_LEN] ^= 1;
        both[slot_offset(MIN_CAP, 1) as usize + SLOT_HEADER_LEN] ^= 1;
        assert!(matches!(decode(&both), Err(Damage::NoValidSlot)));
        let mut header = bytes.clone();
        header[25] = b'x';
        assert!(matches!(decode(&header), Err(Damage::Header)));
        assert!(matches!(decode(b"not json"), Err(Damage::Header)));
        assert_eq!(decode(b"  {\"version\":1}").unwrap(), Decoded::Legacy);
        assert_eq!(decode(b"").unwrap(), Decoded::Empty);
    }

    #[test]
    fn capacity_leaves_room_to_double_and_fits_a_page_for_small_records() {
        assert_eq!(cap_for(300), MIN_CAP);
        assert!(fits(
            cap_for(5000) as usize / 2 - SLOT_OVERHEAD,
            cap_for(5000)
        ));
        assert!(FILE_HEADER_LEN + 2 * MIN_CAP as usize <= 4096);
    }
}
