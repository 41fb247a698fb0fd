//! A TensorBoard event-file writer, so that `tensorboard --logdir <run dir>` can chart a run's
//! losses and metrics and show sample captions next to the JSON metrics log. TensorBoard reads
//! files named `events.out.tfevents.*`: a sequence of TFRecords (length, CRC-32C of the length,
//! data, CRC-32C of the data), each holding one `tensorflow.Event` protobuf. Both layers are
//! small enough to encode by hand here rather than pull in a protobuf and a CRC crate. Only what
//! the trainer logs is supported: scalars (`Summary.Value.simple_value`) and text (a string
//! tensor tagged for the text plugin).

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Every event file starts with this version record. TensorBoard parses the number: from 2 on it
/// no longer drops data when steps go backwards, which a resume across files may well do.
const FILE_VERSION: &str = "brain.Event:2";
/// TensorBoard only loads files whose names start with this.
const FILE_NAME_PREFIX: &str = "events.out.tfevents.";
/// `tensorflow.DataType.DT_STRING`.
const DT_STRING: u64 = 7;

/// Files created by this process so far: part of the file name, so that two writers opened in
/// the same second (a resume right after a crash, or tests) never pick the same name.
static FILES_CREATED: AtomicU64 = AtomicU64::new(0);

/// Appends events to a new event file in a run's TensorBoard directory.
pub struct EventWriter {
    path: PathBuf,
    file: BufWriter<File>,
}

impl EventWriter {
    /// Creates `dir` if needed and a new event file in it. A resumed run gets a second file in
    /// the same directory; TensorBoard merges all the files of a directory into one run.
    pub fn create(dir: &Path) -> io::Result<EventWriter> {
        fs::create_dir_all(dir)?;
        let host = hostname();
        let pid = std::process::id();
        let (path, file) = loop {
            let seconds = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
            let counter = FILES_CREATED.fetch_add(1, Ordering::Relaxed);
            let path = dir.join(format!("{FILE_NAME_PREFIX}{seconds}.{host}.{pid}.{counter}"));
            // Never append to someone else's file: a clash just moves on to the next counter.
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(file) => break (path, file),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        };
        let mut writer = EventWriter { path, file: BufWriter::new(file) };
        let mut event = Vec::new();
        put_double(&mut event, 1, wall_time());
        put_bytes(&mut event, 3, FILE_VERSION.as_bytes());
        writer.write_record(&event)?;
        // So that even a run that dies before its first validation leaves a readable file.
        writer.file.flush()?;
        Ok(writer)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Logs `value` under `tag` at `step`; TensorBoard stores scalars as float32.
    pub fn add_scalar(&mut self, tag: &str, value: f64, step: u64) -> io::Result<()> {
        let mut summary_value = Vec::new();
        put_bytes(&mut summary_value, 1, tag.as_bytes());
        put_float(&mut summary_value, 2, value as f32);
        self.write_summary(&summary_value, step)
    }

    /// Logs `text` (shown as Markdown by the text dashboard) under `tag` at `step`.
    pub fn add_text(&mut self, tag: &str, text: &str, step: u64) -> io::Result<()> {
        let mut plugin_data = Vec::new();
        put_bytes(&mut plugin_data, 1, b"text");
        let mut metadata = Vec::new();
        put_bytes(&mut metadata, 1, &plugin_data);

        // A string tensor of shape [1] holding the text.
        let mut dim = Vec::new();
        put_varint_field(&mut dim, 1, 1);
        let mut shape = Vec::new();
        put_bytes(&mut shape, 2, &dim);
        let mut tensor = Vec::new();
        put_varint_field(&mut tensor, 1, DT_STRING);
        put_bytes(&mut tensor, 2, &shape);
        put_bytes(&mut tensor, 8, text.as_bytes());

        let mut summary_value = Vec::new();
        put_bytes(&mut summary_value, 1, tag.as_bytes());
        put_bytes(&mut summary_value, 8, &tensor);
        put_bytes(&mut summary_value, 9, &metadata);
        self.write_summary(&summary_value, step)
    }

    /// Marks a (re)start at `step`: TensorBoard then drops the events of earlier files at
    /// `step` or later. A resumed run calls it so that the steps trained after its last
    /// checkpoint, which the resumed run trains again, are not shown twice.
    pub fn add_session_start(&mut self, step: u64) -> io::Result<()> {
        // `SessionLog { status: START (1) }` in `Event.session_log` (field 6).
        let mut session_log = Vec::new();
        put_varint_field(&mut session_log, 1, 1);
        let mut event = Vec::new();
        put_double(&mut event, 1, wall_time());
        put_varint_field(&mut event, 2, step);
        put_bytes(&mut event, 6, &session_log);
        self.write_record(&event)
    }

    /// Pushes everything written so far to disk, so that a TensorBoard watching the directory
    /// sees it and a crash afterwards loses nothing.
    pub fn flush(&mut self) -> io::Result<()> {
        self.file.flush()?;
        self.file.get_ref().sync_all()
    }

    /// Writes an Event holding a Summary with the one encoded `Summary.Value`.
    fn write_summary(&mut self, summary_value: &[u8], step: u64) -> io::Result<()> {
        let mut summary = Vec::new();
        put_bytes(&mut summary, 1, summary_value);
        let mut event = Vec::new();
        put_double(&mut event, 1, wall_time());
        // int64 on the wire: a u64 below 2^63 has the same varint as the i64 it stands for.
        put_varint_field(&mut event, 2, step);
        put_bytes(&mut event, 5, &summary);
        self.write_record(&event)
    }

    /// TFRecord framing: length, its masked CRC, the data, its masked CRC (all little-endian).
    fn write_record(&mut self, data: &[u8]) -> io::Result<()> {
        let length = (data.len() as u64).to_le_bytes();
        self.file.write_all(&length)?;
        self.file.write_all(&masked_crc32c(&length).to_le_bytes())?;
        self.file.write_all(data)?;
        self.file.write_all(&masked_crc32c(data).to_le_bytes())
    }
}

/// Seconds since the Unix epoch, as TensorBoard expects in `Event.wall_time`.
fn wall_time() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// The machine's name for the file name (only to tell apart files written by different
/// machines into a shared directory), limited to characters that are safe in a file name.
fn hostname() -> String {
    let name: String = fs::read_to_string("/etc/hostname")
        .unwrap_or_default()
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .collect();
    if name.is_empty() { "localhost".to_string() } else { name }
}

// Protobuf wire format: each field is a key (field number << 3 | wire type) and a payload.
const WIRE_VARINT: u32 = 0;
const WIRE_FIXED64: u32 = 1;
const WIRE_LENGTH_DELIMITED: u32 = 2;
const WIRE_FIXED32: u32 = 5;

fn put_varint(buf: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        buf.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    buf.push(value as u8);
}

fn put_key(buf: &mut Vec<u8>, field: u32, wire_type: u32) {
    put_varint(buf, u64::from(field << 3 | wire_type));
}

fn put_varint_field(buf: &mut Vec<u8>, field: u32, value: u64) {
    put_key(buf, field, WIRE_VARINT);
    put_varint(buf, value);
}

/// Strings, bytes and embedded messages alike.
fn put_bytes(buf: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_key(buf, field, WIRE_LENGTH_DELIMITED);
    put_varint(buf, bytes.len() as u64);
    buf.extend_from_slice(bytes);
}

fn put_double(buf: &mut Vec<u8>, field: u32, value: f64) {
    put_key(buf, field, WIRE_FIXED64);
    buf.extend_from_slice(&value.to_le_bytes());
}

fn put_float(buf: &mut Vec<u8>, field: u32, value: f32) {
    put_key(buf, field, WIRE_FIXED32);
    buf.extend_from_slice(&value.to_le_bytes());
}

/// CRC-32C (Castagnoli), reflected polynomial: the checksum TFRecord uses.
const CRC32C_POLYNOMIAL: u32 = 0x82F6_3B78;

/// The CRC of every byte value, so that the checksum costs one lookup per byte.
const CRC32C_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut byte = 0;
    while byte < 256 {
        let mut crc = byte as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ CRC32C_POLYNOMIAL } else { crc >> 1 };
            bit += 1;
        }
        table[byte] = crc;
        byte += 1;
    }
    table
};

fn crc32c(data: &[u8]) -> u32 {
    let crc = data.iter().fold(!0u32, |crc, &b| CRC32C_TABLE[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8));
    !crc
}

/// TFRecord stores CRCs masked (rotated right by 15 and offset), because a CRC of data that
/// itself contains CRCs is weak.
fn masked_crc32c(data: &[u8]) -> u32 {
    crc32c(data).rotate_right(15).wrapping_add(0xa282_ead8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_known_vectors() {
        assert_eq!(crc32c(b""), 0);
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        // RFC 3720 (iSCSI), appendix B.4.
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(&[0xFFu8; 32]), 0x62A8_AB43);
        assert_eq!(crc32c(&(0u8..32).collect::<Vec<_>>()), 0x46DD_794E);
        // As computed by tensorboard's own (Python) TFRecord reader.
        assert_eq!(masked_crc32c(b"123456789"), 0xC78A_B0E5);
        assert_eq!(masked_crc32c(&0u64.to_le_bytes()), 0x0798_0329);
    }

    /// One protobuf field as read back: the number and the payload by wire type.
    #[derive(Debug, PartialEq)]
    enum Field {
        Varint(u64),
        Fixed64(u64),
        Bytes(Vec<u8>),
        Fixed32(u32),
    }

    fn read_varint(bytes: &[u8], at: &mut usize) -> u64 {
        let (mut value, mut shift) = (0u64, 0);
        loop {
            let byte = bytes[*at];
            *at += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return value;
            }
            shift += 7;
        }
    }

    fn decode(message: &[u8]) -> Vec<(u32, Field)> {
        let (mut fields, mut at) = (Vec::new(), 0);
        while at < message.len() {
            let key = read_varint(message, &mut at);
            let start = at;
            let payload = match (key & 7) as u32 {
                WIRE_VARINT => Field::Varint(read_varint(message, &mut at)),
                WIRE_FIXED64 => {
                    at += 8;
                    Field::Fixed64(u64::from_le_bytes(message[start..at].try_into().unwrap()))
                }
                WIRE_LENGTH_DELIMITED => {
                    let length = read_varint(message, &mut at) as usize;
                    at += length;
                    Field::Bytes(message[at - length..at].to_vec())
                }
                WIRE_FIXED32 => {
                    at += 4;
                    Field::Fixed32(u32::from_le_bytes(message[start..at].try_into().unwrap()))
                }
                other => panic!("unexpected wire type {other}"),
            };
            fields.push(((key >> 3) as u32, payload));
        }
        fields
    }

    /// The one field numbered `number` (panics if absent or repeated).
    fn field(message: &[u8], number: u32) -> Field {
        let mut matching: Vec<Field> = decode(message).into_iter().filter(|(n, _)| *n == number).map(|(_, f)| f).collect();
        assert_eq!(matching.len(), 1, "field {number} in {:?}", decode(message));
        matching.pop().unwrap()
    }

    fn bytes(message: &[u8], number: u32) -> Vec<u8> {
        match field(message, number) {
            Field::Bytes(b) => b,
            other => panic!("field {number} is {other:?}"),
        }
    }

    /// Splits a TFRecord file into its records, checking both CRCs of each.
    fn read_records(path: &Path) -> Vec<Vec<u8>> {
        let (file, mut records, mut at) = (fs::read(path).unwrap(), Vec::new(), 0);
        while at < file.len() {
            let length_bytes = &file[at..at + 8];
            let length = u64::from_le_bytes(length_bytes.try_into().unwrap()) as usize;
            assert_eq!(u32::from_le_bytes(file[at + 8..at + 12].try_into().unwrap()), masked_crc32c(length_bytes));
            let data = &file[at + 12..at + 12 + length];
            let data_crc = &file[at + 12 + length..at + 16 + length];
            assert_eq!(u32::from_le_bytes(data_crc.try_into().unwrap()), masked_crc32c(data));
            records.push(data.to_vec());
            at += 16 + length;
        }
        records
    }

    fn scratch_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("caption-tensorboard-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn events_round_trip() {
        let dir = scratch_dir("round-trip");
        let mut writer = EventWriter::create(&dir.join("tb")).unwrap();
        writer.add_scalar("loss/train", 2.5, 10).unwrap();
        writer.add_scalar("val/CIDEr", 0.1, 1 << 40).unwrap();
        writer.add_text("samples", "a dog runs | ünïcode", 20).unwrap();
        writer.flush().unwrap();
        let name = writer.path().file_name().unwrap().to_str().unwrap().to_string();
        assert!(name.starts_with(FILE_NAME_PREFIX), "{name}");

        let records = read_records(writer.path());
        assert_eq!(records.len(), 4);
        assert_eq!(bytes(&records[0], 3), FILE_VERSION.as_bytes());
        let Field::Fixed64(wall_time) = field(&records[0], 1) else { panic!() };
        assert!(f64::from_bits(wall_time) > 1.0e9);

        for (record, (tag, value, step)) in records[1..3].iter().zip([("loss/train", 2.5f32, 10u64), ("val/CIDEr", 0.1, 1 << 40)]) {
            assert_eq!(field(record, 2), Field::Varint(step));
            let summary_value = bytes(&bytes(record, 5), 1);
            assert_eq!(bytes(&summary_value, 1), tag.as_bytes());
            assert_eq!(field(&summary_value, 2), Field::Fixed32(value.to_bits()));
        }

        assert_eq!(field(&records[3], 2), Field::Varint(20));
        let summary_value = bytes(&bytes(&records[3], 5), 1);
        assert_eq!(bytes(&summary_value, 1), b"samples");
        assert_eq!(bytes(&bytes(&bytes(&summary_value, 9), 1), 1), b"text");
        let tensor = bytes(&summary_value, 8);
        assert_eq!(field(&tensor, 1), Field::Varint(DT_STRING));
        assert_eq!(field(&bytes(&bytes(&tensor, 2), 2), 1), Field::Varint(1));
        assert_eq!(bytes(&tensor, 8), "a dog runs | ünïcode".as_bytes());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_second_writer_makes_a_second_file() {
        let dir = scratch_dir("resume");
        let first = EventWriter::create(&dir).unwrap();
        let second = EventWriter::create(&dir).unwrap();
        assert_ne!(first.path(), second.path());
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 2);
        drop((first, second));
        fs::remove_dir_all(&dir).unwrap();
    }
}
