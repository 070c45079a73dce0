//! Reading an archive object back, streamed: SHA-256 and size of the stored bytes, and (for verify, delete and
//! restore) the records, gunzipped and decoded a chunk at a time, so memory holds one chunk, one line and one
//! batch, never the object.

use std::io::Write;

use bytes::Bytes;
use flate2::write::GzDecoder;
use futures_util::{stream::BoxStream, StreamExt};
use object_store::ObjectStoreExt;

use super::{
    destination::Destination,
    format::{self, hex, LineAt, Record, Table},
};
use crate::error::{Error, Result};

/// What reading a whole object found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Read {
    /// Stored (compressed) bytes.
    pub size: u64,
    /// SHA-256 of the stored bytes, lower-case hex.
    pub sha256: String,
    /// Records read (0 when only checksummed).
    pub rows: u64,
    /// Events embedded in them.
    pub events: u64,
}

/// Decoded lines of one object, fed by the gzip decoder.
struct Lines {
    table: Table,
    key: String,
    partial: Vec<u8>,
    line: u64,
    out: Vec<Record>,
    error: Option<Error>,
    rows: u64,
    events: u64,
}

impl Lines {
    fn take_line(&mut self) -> std::io::Result<()> {
        self.line += 1;
        let bytes = std::mem::take(&mut self.partial);
        let decoded = std::str::from_utf8(&bytes)
            .map_err(|_| {
                Error::invalid(format!(
                    "object {} line {}: not a valid archive record: not UTF-8 text",
                    self.key, self.line
                ))
            })
            .and_then(|text| format::decode(self.table, text, LineAt { object: &self.key, line: self.line }));
        match decoded {
            Ok(r) => {
                self.rows += 1;
                self.events += r.events();
                self.out.push(r);
                Ok(())
            }
            Err(e) => {
                self.error = Some(e);
                Err(std::io::Error::other("bad line"))
            }
        }
    }
}

impl Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut rest = buf;
        while let Some(at) = rest.iter().position(|b| *b == b'\n') {
            self.partial.extend_from_slice(&rest[..at]);
            self.take_line()?;
            rest = &rest[at + 1..];
        }
        self.partial.extend_from_slice(rest);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Streams one object. [`ObjectReader::next_batch`] returns records as they are decoded; at the end of the
/// object it checks the gzip trailer, and [`ObjectReader::finish`] gives size and SHA-256.
pub struct ObjectReader<'a> {
    dest: &'a Destination,
    key: String,
    stream: Option<BoxStream<'static, object_store::Result<Bytes>>>,
    sha: ring::digest::Context,
    size: u64,
    decoder: Option<GzDecoder<Lines>>,
    ended: bool,
}

impl<'a> ObjectReader<'a> {
    /// Opens `key`; with `table`, its records are decoded, otherwise only its bytes are checksummed.
    pub async fn open(dest: &'a Destination, key: &str, table: Option<Table>) -> Result<ObjectReader<'a>> {
        let got = dest
            .store()
            .get(&dest.path(key))
            .await
            .map_err(|e| dest.error(&format!("cannot read object {key}"), e))?;
        Ok(ObjectReader {
            dest,
            key: key.to_string(),
            stream: Some(got.into_stream()),
            sha: ring::digest::Context::new(&ring::digest::SHA256),
            size: 0,
            decoder: table.map(|table| {
                GzDecoder::new(Lines {
                    table,
                    key: key.to_string(),
                    partial: Vec::new(),
                    line: 0,
                    out: Vec::new(),
                    error: None,
                    rows: 0,
                    events: 0,
                })
            }),
            ended: false,
        })
    }

    fn damaged(&self, why: impl std::fmt::Display) -> Error {
        Error::invalid(format!("object {} is damaged: {why}", self.key))
    }

    fn decode_error(&mut self, e: std::io::Error) -> Error {
        match self.decoder.as_mut().and_then(|d| d.get_mut().error.take()) {
            Some(line_error) => line_error,
            None if e.kind() == std::io::ErrorKind::WriteZero => {
                self.damaged("data after the end of its gzip stream")
            }
            None => self.damaged(format!("not a valid gzip stream ({e})")),
        }
    }

    /// Up to about `max` more records (fewer at the end of the object); an empty batch means the object is
    /// read to its end and its gzip stream checked.
    pub async fn next_batch(&mut self, max: usize) -> Result<Vec<Record>> {
        loop {
            if let Some(d) = self.decoder.as_mut() {
                if d.get_ref().out.len() >= max.max(1) {
                    return Ok(std::mem::take(&mut d.get_mut().out));
                }
            }
            if self.ended {
                let out = self.decoder.as_mut().map(|d| std::mem::take(&mut d.get_mut().out));
                return Ok(out.unwrap_or_default());
            }
            let next = match self.stream.as_mut() {
                Some(s) => s.next().await,
                None => None,
            };
            match next {
                Some(Ok(chunk)) => {
                    self.sha.update(&chunk);
                    self.size += chunk.len() as u64;
                    if let Some(d) = self.decoder.as_mut() {
                        if let Err(e) = d.write_all(&chunk) {
                            return Err(self.decode_error(e));
                        }
                    }
                }
                Some(Err(e)) => {
                    let key = self.key.clone();
                    return Err(self.dest.error(&format!("cannot read object {key}"), e));
                }
                None => {
                    self.ended = true;
                    self.stream = None;
                    if let Some(mut d) = self.decoder.take() {
                        if let Err(e) = d.try_finish() {
                            self.decoder = Some(d);
                            let e = self.decode_error(e);
                            return Err(match e.0.message.contains("not a valid gzip stream") {
                                true => self.damaged("truncated or corrupt gzip stream"),
                                false => e,
                            });
                        }
                        if !d.get_ref().partial.is_empty() {
                            // A last line without its newline: read it too (our writer always ends lines).
                            if let Err(e) = d.get_mut().take_line() {
                                self.decoder = Some(d);
                                return Err(self.decode_error(e));
                            }
                        }
                        self.decoder = Some(d);
                    }
                }
            }
        }
    }

    /// Reads whatever is left (dropping records) and returns what the whole object held.
    pub async fn finish(mut self) -> Result<Read> {
        while !self.ended || self.decoder.as_ref().is_some_and(|d| !d.get_ref().out.is_empty()) {
            self.next_batch(usize::MAX).await?;
        }
        let (rows, events) = self.decoder.as_ref().map_or((0, 0), |d| (d.get_ref().rows, d.get_ref().events));
        Ok(Read { size: self.size, sha256: hex(self.sha.finish().as_ref()), rows, events })
    }
}

/// Size and SHA-256 of a stored object, read back streamed.
pub async fn checksum(dest: &Destination, key: &str) -> Result<Read> {
    ObjectReader::open(dest, key, None).await?.finish().await
}

/// Checks a read object against what the manifest says; `None` when it matches.
pub fn mismatch(
    entry: &parallax_storage_abi::archive::ObjectEntry,
    got: &Read,
    decoded: bool,
) -> Option<String> {
    if got.size != entry.size {
        return Some(format!("size {} bytes, the manifest says {}", got.size, entry.size));
    }
    if got.sha256 != entry.sha256 {
        return Some(format!("SHA-256 {}, the manifest says {}", got.sha256, entry.sha256));
    }
    if decoded && (got.rows != entry.rows || got.events != entry.events) {
        return Some(format!(
            "{} rows and {} events, the manifest says {} and {}",
            got.rows, got.events, entry.rows, entry.events
        ));
    }
    None
}
