//! Reading an archive object back, streamed: SHA-256 and size of the stored bytes, and (for verify, delete and
//! restore) the records, gunzipped and decoded a chunk at a time, so memory holds one chunk, one line and one
//! batch, never the object.

use std::io::Write;

use bytes::Bytes;
use flate2::write::GzDecoder;
use futures_util::{stream::BoxStream, StreamExt};
use object_store::ObjectStoreExt;

use super::{
    destination::{Destination, Kind},
    format::{self, hex, LineAt, Record, Table},
};
use crate::{
    config::ArchiveConfig,
    error::{Error, Result},
};

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
    /// Dropped after `stream` (field order).
    _copy: Option<LocalCopy>,
}

impl<'a> ObjectReader<'a> {
    /// Opens `key`; with `table`, its records are decoded, otherwise only its bytes are checksummed.
    ///
    /// Decoding a remote object reads it from a local temporary copy: verify, delete and restore do slow
    /// work between chunks (decoding, importing), and one GET kept open that long runs past the request
    /// timeout (`storage.archive.timeout` covers the body). The copy is streamed to disk and removed when the
    /// reader is dropped; a checksum-only read streams directly.
    pub async fn open(dest: &'a Destination, key: &str, table: Option<Table>) -> Result<ObjectReader<'a>> {
        let copy = match table {
            Some(_) => LocalCopy::of(dest, key).await?,
            None => None,
        };
        let from = copy.as_ref().map_or(dest, |c| &c.dest);
        let got = from
            .store()
            .get(&from.path(key))
            .await
            .map_err(|e| dest.error(&format!("cannot read object {key}"), e))?;
        Ok(ObjectReader {
            _copy: copy,
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

/// A remote object copied into a temporary directory (same key below it), removed on drop.
pub(super) struct LocalCopy {
    dir: std::path::PathBuf,
    dest: Destination,
}

impl LocalCopy {
    /// `None` for a local destination (read in place).
    pub(super) async fn of(dest: &Destination, key: &str) -> Result<Option<LocalCopy>> {
        if dest.kind == Kind::Local {
            return Ok(None);
        }
        let dir = std::env::temp_dir().join(format!("parallax-restore-{}", uuid::Uuid::now_v7()));
        let file = dir.join(key);
        let shown = dir.display().to_string();
        let local_error =
            |e: std::io::Error| Error::unavailable(format!("cannot copy object {key} to {shown}: {e}"));
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent).map_err(local_error)?;
        }
        // From here on the directory is removed whatever happens.
        let copy = LocalCopy { dest: Destination::open(&shown, &ArchiveConfig::default(), false)?, dir };
        let mut out = std::fs::File::create(&file).map_err(local_error)?;
        let mut stream = dest
            .store()
            .get(&dest.path(key))
            .await
            .map_err(|e| dest.error(&format!("cannot read object {key}"), e))?
            .into_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| dest.error(&format!("cannot read object {key}"), e))?;
            std::io::Write::write_all(&mut out, &chunk).map_err(local_error)?;
        }
        Ok(Some(copy))
    }
}

impl Drop for LocalCopy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;
    use crate::{archive::format::encode_audit, config::ArchiveConfig};

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn line(n: u8) -> String {
        encode_audit(
            &parallax_storage_abi::AuditEntry {
                id: format!("0190b3f2-7c1e-7a00-8000-0000000001{n:02x}").into(),
                timestamp: n as i64,
                action: "a".into(),
                actor: None.into(),
                resource_type: None.into(),
                resource_id: None.into(),
                details: None.into(),
                ip_address: None.into(),
                user_agent: None.into(),
            },
            None,
        )
        .unwrap()
    }

    async fn read(bytes: Vec<u8>) -> Result<(Vec<Record>, Read)> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("o.ndjson.gz"), &bytes).unwrap();
        let dest =
            Destination::open(&dir.path().display().to_string(), &ArchiveConfig::default(), false).unwrap();
        let mut r = ObjectReader::open(&dest, "o.ndjson.gz", Some(Table::AuditLogs)).await?;
        let mut all = Vec::new();
        loop {
            let b = r.next_batch(1).await?;
            if b.is_empty() {
                break;
            }
            all.extend(b);
        }
        let got = r.finish().await?;
        assert_eq!(got.size, bytes.len() as u64);
        assert_eq!(got.sha256, hex(ring::digest::digest(&ring::digest::SHA256, &bytes).as_ref()));
        Ok((all, got))
    }

    #[tokio::test]
    async fn objects_read_back_in_batches_and_damage_is_named() {
        let text = format!("{}\n{}\n{}", line(1), line(2), line(3));
        let (records, got) = read(gz(text.as_bytes())).await.unwrap();
        assert_eq!((records.len(), got.rows), (3, 3), "a last line without its newline is read too");
        assert_eq!(records[2].id(), "0190b3f2-7c1e-7a00-8000-000000000103");

        let mut two = gz(format!("{}\n", line(1)).as_bytes());
        two.extend(gz(format!("{}\n", line(2)).as_bytes()));
        let e = read(two).await.unwrap_err();
        assert!(e.to_string().contains("object o.ndjson.gz is damaged: data after the end"), "{e}");

        let whole = gz(format!("{}\n", line(1)).as_bytes());
        let e = read(whole[..whole.len() - 4].to_vec()).await.unwrap_err();
        assert!(e.to_string().contains("object o.ndjson.gz is damaged: truncated or corrupt"), "{e}");

        let e = read(b"plain text\n".to_vec()).await.unwrap_err();
        assert!(e.to_string().contains("object o.ndjson.gz is damaged"), "{e}");

        let e = read(gz(format!("{}\n\u{ff}oops\n", line(1)).as_bytes())).await.unwrap_err();
        assert!(e.to_string().contains("object o.ndjson.gz line 2: not a valid archive record"), "{e}");
        let mut bad = format!("{}\n", line(1)).into_bytes();
        bad.extend([0xff, 0xfe, b'\n']);
        let e = read(gz(&bad)).await.unwrap_err();
        assert!(e.to_string().contains("line 2") && e.to_string().contains("UTF-8"), "{e}");

        let (records, _) = read(gz(b"")).await.unwrap();
        assert!(records.is_empty(), "an empty object has no record");
    }
}
