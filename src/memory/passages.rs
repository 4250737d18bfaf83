//! Documents into passages for long-term memory: [`split`] cuts a text into paragraph or
//! sentence windows small enough to sit in a prompt beside a question, [`passage_id`]
//! names each by its content (so reading a document twice stores nothing twice), and
//! [`read_document`] reads a user's file with a clear error for what cannot be text.
//!
//! Used by `thau memory add`, `thau learn --corpus` (every document is in memory before
//! any training) and the open-book training items, which must see passages cut the same
//! way recall will hand them to the model.

use std::path::{Path, PathBuf};

use serde::Serialize;
use uuid::Uuid;

use super::{MemoryError, NewMemory, Result};

/// Longest passage, in characters. A recalled passage shares the prompt with the question
/// and the answer in a 256-token context; about 100 tokens leaves room for two of them.
pub const PASSAGE_MAX_CHARS: usize = 400;
/// Passages shorter than this (a stray heading) are joined to the next one.
pub const PASSAGE_MIN_CHARS: usize = 40;
/// Largest document `read_document` accepts (bytes). Bigger files are refused whole, so
/// nothing of them is stored half.
pub const MAX_DOCUMENT_BYTES: u64 = 16 << 20;

/// Importance of a passage read from a document (0..1; learned facts get more).
pub const PASSAGE_IMPORTANCE: f32 = 0.5;
/// Most files one `documents` walk collects (a mistyped `/` is not a corpus).
pub const MAX_DOCUMENTS: usize = 100_000;

/// One passage of a document.
#[derive(Debug, Clone, PartialEq)]
pub struct Passage {
    /// Position in its document (0-based).
    pub index: usize,
    pub text: String,
    /// The headings it stands under (the document's title, its section's): what the
    /// passage is about, searched but not part of its text.
    pub keys: Vec<String>,
}

/// The id a passage is stored under: derived from its whitespace-normalised text, so the
/// same passage read again (from any file) lands on the same point.
pub fn passage_id(text: &str) -> Uuid {
    let norm = normalise(text);
    // FNV-1a, 128-bit: stable across runs, machines and versions (unlike std's hasher).
    let mut h: u128 = 0x6c62272e07bb014262b821756295c58d;
    for b in norm.as_bytes() {
        h ^= *b as u128;
        h = h.wrapping_mul(0x0000000001000000000000000000013B);
    }
    // Mark it as a version-8 (custom) RFC 4122 UUID so tools read it as a well-formed one.
    h = (h & !(0xF << 76)) | (0x8 << 76);
    h = (h & !(0b11 << 62)) | (0b10 << 62);
    Uuid::from_u128(h)
}

fn normalise(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Splits `text` into passages of at most [`PASSAGE_MAX_CHARS`] characters: whole
/// paragraphs when they fit, else windows of whole sentences, else (a sentence longer than
/// the limit) pieces cut at spaces. Markdown headings are no passage's text — a heading is
/// never an answer, and one that led its paragraph ("La isla de Quendralia.") was picked as
/// the sentence sharing the question's words — but each passage keeps the document's title
/// and its section's heading as [`Passage::keys`], since they tell what it is about (a
/// passage about "each team" under "El trenzabol"). A document of headings alone is kept
/// as text.
pub fn split(text: &str) -> Vec<Passage> {
    // (text, keys)
    let mut pieces: Vec<(String, Vec<String>)> = Vec::new();
    let mut title: Option<String> = None;
    let mut section: Option<String> = None;
    let mut headings: Vec<String> = Vec::new();
    for para in text.split("\n\n").map(normalise).filter(|p| !p.is_empty()) {
        if para.starts_with('#') && para.chars().count() < PASSAGE_MIN_CHARS * 2 {
            let heading = para.trim_start_matches('#').trim().to_string();
            if heading.is_empty() {
                continue;
            }
            headings.push(heading.clone());
            if title.is_none() {
                title = Some(heading);
            } else {
                section = Some(heading);
            }
            continue;
        }
        let keys: Vec<String> = title.iter().chain(&section).cloned().collect();
        let mut cut = Vec::new();
        if para.chars().count() <= PASSAGE_MAX_CHARS {
            cut.push(para);
        } else {
            pack(&sentences(&para), &mut cut);
        }
        pieces.extend(cut.into_iter().map(|c| (c, keys.clone())));
    }
    if pieces.is_empty() && !headings.is_empty() {
        pieces.push((format!("{}.", headings.join(". ")), Vec::new()));
    }
    // Join stray short pieces to their neighbour when the two still fit.
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for (p, keys) in pieces {
        match out.last_mut() {
            Some((last, last_keys))
                if (last.chars().count() < PASSAGE_MIN_CHARS
                    || p.chars().count() < PASSAGE_MIN_CHARS)
                    && last.chars().count() + 1 + p.chars().count() <= PASSAGE_MAX_CHARS =>
            {
                last.push(' ');
                last.push_str(&p);
                for k in keys {
                    if !last_keys.contains(&k) {
                        last_keys.push(k);
                    }
                }
            }
            _ => out.push((p, keys)),
        }
    }
    out.into_iter()
        .enumerate()
        .map(|(index, (text, keys))| Passage { index, text, keys })
        .collect()
}

/// The sentences of a paragraph: cut after `.`, `!`, `?` or `…` followed by a space and an
/// upper-case letter, a digit, `¿` or `¡` (so "e.g. the" and "3.5 m" stay whole).
pub fn sentences(para: &str) -> Vec<String> {
    let chars: Vec<char> = para.chars().collect();
    let mut out = Vec::new();
    let mut start = 0;
    for i in 0..chars.len() {
        let end_mark = matches!(chars[i], '.' | '!' | '?' | '…');
        let next_starts = chars.get(i + 1) == Some(&' ')
            && chars
                .get(i + 2)
                .is_some_and(|c| c.is_uppercase() || c.is_ascii_digit() || matches!(c, '¿' | '¡'));
        if end_mark && next_starts {
            out.push(chars[start..=i].iter().collect::<String>());
            start = i + 2;
        }
    }
    if start < chars.len() {
        out.push(chars[start..].iter().collect::<String>());
    }
    out.into_iter().filter(|s| !s.trim().is_empty()).collect()
}

/// Greedily packs sentences into windows of at most [`PASSAGE_MAX_CHARS`].
fn pack(sentences: &[String], out: &mut Vec<String>) {
    let mut cur = String::new();
    for s in sentences {
        for piece in cut_long(s) {
            if !cur.is_empty()
                && cur.chars().count() + 1 + piece.chars().count() > PASSAGE_MAX_CHARS
            {
                out.push(std::mem::take(&mut cur));
            }
            if !cur.is_empty() {
                cur.push(' ');
            }
            cur.push_str(&piece);
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
}

/// A sentence longer than the limit, cut at spaces (or anywhere, for a word that long).
fn cut_long(s: &str) -> Vec<String> {
    if s.chars().count() <= PASSAGE_MAX_CHARS {
        return vec![s.to_string()];
    }
    let mut out = Vec::new();
    let mut cur = String::new();
    for word in s.split(' ') {
        let mut word: Vec<char> = word.chars().collect();
        while word.len() > PASSAGE_MAX_CHARS {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            out.push(word.drain(..PASSAGE_MAX_CHARS).collect());
        }
        let word: String = word.into_iter().collect();
        if !cur.is_empty() && cur.chars().count() + 1 + word.chars().count() > PASSAGE_MAX_CHARS {
            out.push(std::mem::take(&mut cur));
        }
        if !cur.is_empty() {
            cur.push(' ');
        }
        cur.push_str(&word);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// The memories of one document: its passages with content ids, each from
/// `<source>#<position>`.
pub fn memories_of(text: &str, source: &str) -> Vec<NewMemory> {
    split(text)
        .into_iter()
        .map(|p| NewMemory {
            id: Some(passage_id(&p.text)),
            source: format!("{source}#{}", p.index),
            text: p.text,
            importance: PASSAGE_IMPORTANCE,
            keys: p.keys,
        })
        .collect()
}

/// A document that could not be read, and why.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Refused {
    pub path: PathBuf,
    pub reason: String,
}

/// The documents under `path` (`path` itself when it is a file, whatever its extension):
/// the `.md` and `.txt` files of a directory and its subdirectories, sorted.
pub fn documents(path: &Path) -> Result<Vec<PathBuf>> {
    let meta = std::fs::metadata(path).map_err(|e| MemoryError::io(path, e))?;
    if meta.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut out = Vec::new();
    let mut dirs = vec![path.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).map_err(|e| MemoryError::io(&dir, e))? {
            let p = entry.map_err(|e| MemoryError::io(&dir, e))?.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| matches!(e, "md" | "txt"))
            {
                out.push(p);
                if out.len() > MAX_DOCUMENTS {
                    return Err(bad(
                        path,
                        &format!("holds more than {MAX_DOCUMENTS} documents"),
                    ));
                }
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Reads every document under each of `paths` into memories, source names relative to
/// the directory given (or the file name). A document that cannot be read is refused with
/// its reason and the others go on; a path that does not exist is an error.
pub fn read_all(paths: &[PathBuf]) -> Result<(Vec<NewMemory>, usize, Vec<Refused>)> {
    let (mut memories, mut files, mut refused) = (Vec::new(), 0, Vec::new());
    for root in paths {
        for file in documents(root)? {
            let source = file
                .strip_prefix(root)
                .ok()
                .filter(|r| !r.as_os_str().is_empty())
                .or_else(|| file.file_name().map(Path::new))
                .unwrap_or(&file)
                .to_string_lossy()
                .to_string();
            match read_document(&file) {
                Ok(text) => {
                    files += 1;
                    memories.extend(memories_of(&text, &source));
                }
                Err(e) => refused.push(Refused {
                    reason: e.to_string(),
                    path: file,
                }),
            }
        }
    }
    Ok((memories, files, refused))
}

/// Reads a document a user hands THAU: refuses what is too large, empty, binary or not
/// UTF-8, naming the file and the reason, before anything is stored.
pub fn read_document(path: &Path) -> Result<String> {
    let meta = std::fs::metadata(path).map_err(|e| MemoryError::io(path, e))?;
    if !meta.is_file() {
        return Err(bad(path, "is not a file"));
    }
    if meta.len() > MAX_DOCUMENT_BYTES {
        return Err(bad(
            path,
            &format!(
                "is {} MiB; documents of up to {} MiB are read (split it into smaller files)",
                meta.len() >> 20,
                MAX_DOCUMENT_BYTES >> 20
            ),
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| MemoryError::io(path, e))?;
    check_text(&bytes).map_err(|why| bad(path, &why))
}

/// The text of `bytes` if they are a document: not empty, no NUL bytes, valid UTF-8.
pub fn check_text(bytes: &[u8]) -> std::result::Result<String, String> {
    if bytes.contains(&0) {
        return Err("looks binary (it holds NUL bytes); give THAU plain text".into());
    }
    let text = std::str::from_utf8(bytes).map_err(|e| {
        format!(
            "is not UTF-8 text (invalid byte at offset {}); convert it, e.g. with iconv -t UTF-8",
            e.valid_up_to()
        )
    })?;
    if text.trim().is_empty() {
        return Err("is empty".into());
    }
    Ok(text.to_string())
}

fn bad(path: &Path, why: &str) -> MemoryError {
    MemoryError::BadRecord(format!("{}: {why}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_paragraphs_stay_whole_under_the_headings_they_are_found_by() {
        let ps = split("# Cells\n\nThe cell is the basic unit of every living thing.\n\n## Energy\n\nMitochondria release the energy stored in food.");
        let texts: Vec<&str> = ps.iter().map(|p| p.text.as_str()).collect();
        assert_eq!(
            texts,
            vec![
                "The cell is the basic unit of every living thing.",
                "Mitochondria release the energy stored in food."
            ]
        );
        assert_eq!(ps[0].keys, vec!["Cells".to_string()]);
        assert_eq!(ps[1].keys, vec!["Cells".to_string(), "Energy".into()]);
        assert_eq!(ps[1].index, 1);
        // A document of headings alone is kept.
        assert_eq!(split("# Cells")[0].text, "Cells.");
        // A stray piece under PASSAGE_MIN_CHARS joins its neighbour.
        let ps = split("The cell is the basic unit of every living thing.\n\nSee above.");
        assert_eq!(ps.len(), 1);
        assert_eq!(
            ps[0].text,
            "The cell is the basic unit of every living thing. See above."
        );
    }

    #[test]
    fn long_paragraphs_become_sentence_windows_under_the_limit() {
        let sentence = "Robert Hooke looked at thin slices of cork under a microscope in 1665.";
        let para = vec![sentence; 20].join(" ");
        let ps = split(&para);
        assert!(ps.len() >= 4);
        for p in &ps {
            assert!(p.text.chars().count() <= PASSAGE_MAX_CHARS, "{}", p.text);
            assert!(
                p.text.ends_with("1665."),
                "windows hold whole sentences: {}",
                p.text
            );
        }
        // Nothing lost: the words in = the words out.
        let words_out: usize = ps.iter().map(|p| p.text.split_whitespace().count()).sum();
        assert_eq!(words_out, para.split_whitespace().count());
        // A run-on "sentence" with no full stops, and one absurd word, are still cut.
        let run_on = format!("{} {}", "palabra ".repeat(200), "x".repeat(1000));
        for p in split(&run_on) {
            assert!(p.text.chars().count() <= PASSAGE_MAX_CHARS);
        }
    }

    #[test]
    fn sentences_keep_abbreviations_and_decimals() {
        assert_eq!(
            sentences("It is 3.5 m long, e.g. a car. ¿Y tú? Sí. 1665 was the year."),
            vec![
                "It is 3.5 m long, e.g. a car.",
                "¿Y tú?",
                "Sí.",
                "1665 was the year."
            ]
        );
    }

    #[test]
    fn ids_follow_the_text_not_its_spacing() {
        assert_eq!(passage_id("a  b\nc"), passage_id("a b c"));
        assert_ne!(passage_id("a b c"), passage_id("a b d"));
        let id = passage_id("x");
        assert_eq!(id.get_version_num(), 8);
    }

    #[test]
    fn a_directory_is_read_whole_but_its_bad_files_are_refused_alone() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("en")).unwrap();
        std::fs::write(dir.path().join("en/a.md"), "# A\n\nAlpha is the first letter of the Greek alphabet.\n\nBeta is the second letter of the Greek alphabet.").unwrap();
        std::fs::write(dir.path().join("b.txt"), "Gamma is third.").unwrap();
        std::fs::write(dir.path().join("bin.txt"), b"\0\x01\x02").unwrap();
        std::fs::write(dir.path().join("skip.json"), "{}").unwrap();
        let (mems, files, refused) = read_all(&[dir.path().to_path_buf()]).unwrap();
        assert_eq!(files, 2);
        let sources: Vec<&str> = mems.iter().map(|m| m.source.as_str()).collect();
        assert_eq!(sources, vec!["b.txt#0", "en/a.md#0", "en/a.md#1"]);
        assert_eq!(refused.len(), 1);
        assert!(refused[0].reason.contains("binary"), "{:?}", refused[0]);
        assert!(mems.iter().all(|m| m.id == Some(passage_id(&m.text))));
        assert!(read_all(&[dir.path().join("missing")]).is_err());
    }

    #[test]
    fn documents_that_are_not_text_are_refused_with_the_reason() {
        assert!(check_text(b"").unwrap_err().contains("empty"));
        assert!(check_text(b"  \n").unwrap_err().contains("empty"));
        assert!(check_text(b"PNG\0\x01").unwrap_err().contains("binary"));
        assert!(check_text(b"caf\xe9").unwrap_err().contains("UTF-8"));
        assert_eq!(check_text("café".as_bytes()).unwrap(), "café");
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.txt");
        let f = std::fs::File::create(&big).unwrap();
        f.set_len(MAX_DOCUMENT_BYTES + 1).unwrap();
        let err = read_document(&big).unwrap_err().to_string();
        assert!(err.contains("big.txt") && err.contains("MiB"), "{err}");
        assert!(read_document(dir.path()).is_err());
    }
}
