//! File encodings: YAML or JSON, optionally gzip-compressed (plain gzip, readable with `gzip -dc`), chosen per
//! file by its extension, so a store whose files were written under different settings reads correctly.

use std::io::{Read, Write};

use flate2::{read::MultiGzDecoder, write::GzEncoder, Compression};
use serde::{de::DeserializeOwned, Serialize};

use crate::config::{FileConfig, FileFormat};

/// How one file is encoded: its format and whether it is gzip-compressed. The extension says which.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Encoding {
    pub format: FileFormat,
    pub gzip: bool,
}

const SUFFIXES: &[(&str, FileFormat, bool)] = &[
    (".yaml.gz", FileFormat::Yaml, true),
    (".yml.gz", FileFormat::Yaml, true),
    (".json.gz", FileFormat::Json, true),
    (".yaml", FileFormat::Yaml, false),
    (".yml", FileFormat::Yaml, false),
    (".json", FileFormat::Json, false),
];

impl Encoding {
    pub fn of_config(c: &FileConfig) -> Self {
        Encoding { format: c.format, gzip: c.compress }
    }

    pub fn ext(&self) -> &'static str {
        match (self.format, self.gzip) {
            (FileFormat::Yaml, false) => "yaml",
            (FileFormat::Yaml, true) => "yaml.gz",
            (FileFormat::Json, false) => "json",
            (FileFormat::Json, true) => "json.gz",
        }
    }

    /// Splits a file name into its stem and the encoding its extension names.
    pub fn split(name: &str) -> Option<(&str, Encoding)> {
        SUFFIXES.iter().find_map(|&(suffix, format, gzip)| {
            name.strip_suffix(suffix).filter(|s| !s.is_empty()).map(|stem| (stem, Encoding { format, gzip }))
        })
    }

    pub fn of_path(path: &std::path::Path) -> Option<Encoding> {
        Encoding::split(path.file_name()?.to_str()?).map(|(_, e)| e)
    }

    pub fn encode<T: Serialize>(&self, doc: &T) -> Result<Vec<u8>, String> {
        let mut text = match self.format {
            FileFormat::Yaml => serde_yaml_ng::to_string(doc).map_err(|e| e.to_string())?.into_bytes(),
            FileFormat::Json => serde_json::to_vec_pretty(doc).map_err(|e| e.to_string())?,
        };
        if !text.ends_with(b"\n") {
            text.push(b'\n');
        }
        if !self.gzip {
            return Ok(text);
        }
        let mut gz = GzEncoder::new(Vec::with_capacity(text.len() / 2 + 64), Compression::default());
        gz.write_all(&text).map_err(|e| e.to_string())?;
        gz.finish().map_err(|e| e.to_string())
    }

    /// Decodes a file's bytes; the error says what is wrong (not where: callers add the path).
    pub fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, String> {
        let plain;
        let text = if self.gzip {
            let mut out = Vec::with_capacity(bytes.len() * 4);
            MultiGzDecoder::new(bytes)
                .read_to_end(&mut out)
                .map_err(|e| format!("not a valid gzip file: {e}"))?;
            plain = out;
            &plain[..]
        } else {
            bytes
        };
        match self.format {
            FileFormat::Yaml => serde_yaml_ng::from_slice(text).map_err(|e| format!("invalid YAML: {e}")),
            FileFormat::Json => serde_json::from_slice(text).map_err(|e| format!("invalid JSON: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::file::docs::ExecutionDoc;

    #[test]
    fn extensions_name_the_encoding() {
        assert_eq!(
            Encoding::split("a.yaml.gz"),
            Some(("a", Encoding { format: FileFormat::Yaml, gzip: true }))
        );
        assert_eq!(
            Encoding::split("1.0.0.json"),
            Some(("1.0.0", Encoding { format: FileFormat::Json, gzip: false }))
        );
        assert_eq!(Encoding::split("notes.txt"), None);
        assert_eq!(Encoding::split(".yaml"), None);
        let enc = Encoding { format: FileFormat::Json, gzip: true };
        assert!(enc.decode::<ExecutionDoc>(b"{}").err().unwrap_or_default().contains("gzip"));
    }
}
