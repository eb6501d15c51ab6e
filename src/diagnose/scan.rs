//! Reading a JSONL log from its end: the newest line holding a needle, and lines
//! newest first, across the rotated files (`x`, then `x.1`, `x.2` ...). Blocks of
//! [`BLOCK`] bytes are read backwards, so finding a recent line costs what lies after
//! it, not the size of the log.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// How much is read at a time, from the end.
pub const BLOCK: usize = 1 << 20;

/// `path`, then its rotated files that exist (`path.1` is the newest of them).
pub fn files_newest_first(path: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if path.exists() {
        out.push(path.to_owned());
    }
    for i in 1.. {
        let p = PathBuf::from(format!("{}.{i}", path.display()));
        if !p.exists() {
            break;
        }
        out.push(p);
    }
    out
}

/// Lines of one file from the last to the first, read in blocks from the end.
pub struct BackLines {
    file: File,
    /// Where the next block (going backwards) ends.
    pos: u64,
    /// The bytes read but not yet handed out: complete lines after `head`, where
    /// `buf[..head]` is the start of a line that continues into them.
    buf: Vec<u8>,
    /// Bytes read so far.
    pub read: u64,
    /// How much one read takes ([`BLOCK`]; smaller in tests).
    block: usize,
}

impl BackLines {
    pub fn open(path: &Path) -> io::Result<BackLines> {
        BackLines::with_block(path, BLOCK)
    }

    fn with_block(path: &Path, block: usize) -> io::Result<BackLines> {
        let file = File::open(path)?;
        let pos = file.metadata()?.len();
        Ok(BackLines {
            file,
            pos,
            buf: Vec::new(),
            read: 0,
            block,
        })
    }

    /// Read the block before `pos` in front of `buf`; false at the file's start.
    fn fill(&mut self) -> io::Result<bool> {
        if self.pos == 0 {
            return Ok(false);
        }
        let n = (self.block as u64).min(self.pos);
        self.pos -= n;
        let mut block = vec![0u8; n as usize];
        self.file.seek(SeekFrom::Start(self.pos))?;
        self.file.read_exact(&mut block)?;
        self.read += n;
        block.extend_from_slice(&self.buf);
        self.buf = block;
        Ok(true)
    }

    /// The next line going backwards (without its newline); `None` at the start.
    pub fn next_line(&mut self) -> io::Result<Option<Vec<u8>>> {
        loop {
            // Drop one trailing newline (the end of the line handed out last).
            let body = match self.buf.last() {
                Some(b'\n') => self.buf.len() - 1,
                _ => self.buf.len(),
            };
            match memchr::memrchr(b'\n', &self.buf[..body]) {
                Some(nl) => {
                    let line = self.buf[nl + 1..body].to_vec();
                    self.buf.truncate(nl + 1);
                    return Ok(Some(line));
                }
                None => {
                    if !self.fill()? {
                        if body == 0 {
                            return Ok(None);
                        }
                        let line = self.buf[..body].to_vec();
                        self.buf.clear();
                        return Ok(Some(line));
                    }
                }
            }
        }
    }

    /// The newest line containing `needle`, searching block by block with
    /// `memmem` (no per-line work until a block holds a match).
    pub fn find(&mut self, needle: &[u8]) -> io::Result<Option<Vec<u8>>> {
        let finder = memchr::memmem::FinderRev::new(needle);
        // A line can straddle two blocks (and the needle with it): the start of a
        // block without a match, up to its first newline, is kept and searched
        // again with the block before it, so a match there has its whole line.
        loop {
            if let Some(at) = finder.rfind(&self.buf) {
                let start = memchr::memrchr(b'\n', &self.buf[..at]).map_or(0, |nl| nl + 1);
                if start == 0 && self.pos > 0 {
                    // The line began in an earlier block: read that too, look again.
                    self.fill()?;
                    continue;
                }
                let end = memchr::memchr(b'\n', &self.buf[at..]).map_or(self.buf.len(), |n| at + n);
                let line = self.buf[start..end].to_vec();
                self.buf.truncate(start);
                return Ok(Some(line));
            }
            // Nothing here: keep only the line that may begin in the block before.
            let keep = memchr::memchr(b'\n', &self.buf).map_or(self.buf.len(), |nl| nl + 1);
            self.buf.truncate(keep);
            if !self.fill()? {
                return Ok(None);
            }
        }
    }
}

/// What [`find_newest`] found: the line and its file, and how many bytes it read.
pub struct Found {
    pub line: Option<(Vec<u8>, PathBuf)>,
    pub bytes_read: u64,
}

/// The newest line holding `needle` in `path` or its rotated files.
pub fn find_newest(path: &Path, needle: &[u8]) -> io::Result<Found> {
    let mut bytes_read = 0;
    for file in files_newest_first(path) {
        let mut lines = BackLines::open(&file)?;
        let found = lines.find(needle)?;
        bytes_read += lines.read;
        if let Some(line) = found {
            return Ok(Found {
                line: Some((line, file)),
                bytes_read,
            });
        }
    }
    Ok(Found {
        line: None,
        bytes_read,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("healgate-scan-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn lines_come_back_newest_first_across_blocks() {
        let d = temp("lines");
        let p = d.join("x.jsonl");
        let mut text = String::new();
        let n = 3 * BLOCK / 40;
        for i in 0..n {
            text.push_str(&format!(
                "{{\"i\":{i},\"pad\":\"{}\"}}\n",
                "x".repeat(i % 50)
            ));
        }
        std::fs::write(&p, &text).unwrap();
        let mut back = BackLines::open(&p).unwrap();
        let mut got = Vec::new();
        while let Some(l) = back.next_line().unwrap() {
            got.push(String::from_utf8(l).unwrap());
        }
        let want: Vec<&str> = text.lines().rev().collect();
        assert_eq!(got.len(), want.len());
        assert!(got.iter().zip(&want).all(|(a, b)| a == b));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn every_line_is_found_whole_with_tiny_blocks() {
        let d = temp("tiny");
        let p = d.join("access.jsonl");
        let lines: Vec<String> = (0..300)
            .map(|i| {
                format!(
                    "{{\"request_id\":\"id{i}\",\"pad\":\"{}\"}}",
                    "q".repeat(i * 7 % 61)
                )
            })
            .collect();
        std::fs::write(&p, lines.join("\n") + "\n").unwrap();
        for block in [7, 16, 33, 64, 1000] {
            for (i, want) in lines.iter().enumerate() {
                let mut back = BackLines::with_block(&p, block).unwrap();
                let needle = format!("\"request_id\":\"id{i}\"");
                let got = back.find(needle.as_bytes()).unwrap().expect("found");
                assert_eq!(String::from_utf8(got).unwrap(), *want, "block {block}");
            }
            let mut back = BackLines::with_block(&p, block).unwrap();
            let mut n = lines.len();
            while let Some(l) = back.next_line().unwrap() {
                n -= 1;
                assert_eq!(String::from_utf8(l).unwrap(), lines[n], "block {block}");
            }
            assert_eq!(n, 0);
        }
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn find_takes_the_newest_match_even_across_a_block_boundary() {
        let d = temp("find");
        let p = d.join("access.jsonl");
        let mut text = String::new();
        let mut i = 0;
        // Lines of varying length so that some line straddles each block boundary.
        while text.len() < 3 * BLOCK {
            text.push_str(&format!(
                "{{\"request_id\":\"id{i}\",\"path\":\"/{}\"}}\n",
                "p".repeat(i % 97)
            ));
            i += 1;
        }
        std::fs::write(&p, &text).unwrap();
        for want in [0, 1, i / 3, i / 2, i - 1] {
            let needle = format!("\"request_id\":\"id{want}\"");
            let found = find_newest(&p, needle.as_bytes()).unwrap().line;
            let (line, _) = found.unwrap_or_else(|| panic!("id{want}"));
            let line = String::from_utf8(line).unwrap();
            assert!(
                line.starts_with(&format!("{{\"request_id\":\"id{want}\",")),
                "{line}"
            );
            assert!(line.ends_with("\"}"), "{line}");
        }
        // Every boundary: find each id that straddles one.
        let mut off = 0;
        for (k, l) in text.lines().enumerate() {
            let end = off + l.len();
            if off / BLOCK != end / BLOCK {
                let needle = format!("\"request_id\":\"id{k}\"");
                let found = find_newest(&p, needle.as_bytes()).unwrap().line;
                assert_eq!(String::from_utf8(found.unwrap().0).unwrap(), l);
            }
            off = end + 1;
        }
        let none = find_newest(&p, b"\"request_id\":\"nope\"").unwrap();
        assert!(none.line.is_none());
        assert_eq!(none.bytes_read, text.len() as u64);
        // The same id later wins; a rotated file is searched after the live one.
        std::fs::write(
            d.join("access.jsonl.1"),
            "{\"request_id\":\"old\",\"n\":1}\n",
        )
        .unwrap();
        let found = find_newest(&p, b"\"request_id\":\"old\"").unwrap().line;
        let (line, file) = found.unwrap();
        assert_eq!(line, b"{\"request_id\":\"old\",\"n\":1}");
        assert!(file.ends_with("access.jsonl.1"));
        let _ = std::fs::remove_dir_all(&d);
    }
}
