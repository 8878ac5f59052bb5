//! Documents given with `-f FILE|DIR`: reading them (a directory means every `*.yaml`, `*.yml`
//! and `*.json` file directly in it, sorted by name; `-` means standard input), and mapping
//! the batch indexes in problem paths (`documents[3].stages[0].type`) back to the file and the
//! document's index inside it (`release.yaml: documents[0].stages[0].type`).

use crate::error::{ApiProblem, CliError};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Every document of a batch, with where each came from.
#[derive(Debug, Default, Clone)]
pub struct Batch {
    /// The documents, in order.
    pub documents: Vec<Value>,
    /// For each document: (file as given, index within that file).
    pub sources: Vec<(String, usize)>,
}

/// A file to read: its display name and its text.
#[derive(Debug, Clone)]
pub struct SourceText {
    /// The name shown in messages.
    pub name: String,
    /// Contents.
    pub text: String,
}

/// Expands `-f` arguments into files: directories become their document files (sorted),
/// files stay as given. `-` is kept for standard input.
pub fn expand(inputs: &[PathBuf]) -> Result<Vec<PathBuf>, CliError> {
    let mut out = Vec::new();
    for input in inputs {
        if input.as_os_str() == "-" {
            out.push(input.clone());
            continue;
        }
        let meta = std::fs::metadata(input).map_err(|source| CliError::Read {
            path: input.clone(),
            source,
        })?;
        if !meta.is_dir() {
            out.push(input.clone());
            continue;
        }
        let entries = std::fs::read_dir(input).map_err(|source| CliError::Read {
            path: input.clone(),
            source,
        })?;
        let mut files = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| CliError::Read {
                path: input.clone(),
                source,
            })?;
            let path = entry.path();
            if path.is_file() && is_document_file(&path) {
                files.push(path);
            }
        }
        if files.is_empty() {
            return Err(CliError::Failed(format!(
                "{} holds no *.yaml, *.yml or *.json files",
                input.display()
            )));
        }
        files.sort();
        out.extend(files);
    }
    Ok(out)
}

fn is_document_file(path: &Path) -> bool {
    matches!(
        path.extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("yaml" | "yml" | "json")
    )
}

/// Reads the files named on the command line.
pub fn read_inputs(inputs: &[PathBuf]) -> Result<Vec<SourceText>, CliError> {
    let mut out = Vec::new();
    for path in expand(inputs)? {
        let text = if path.as_os_str() == "-" {
            std::io::read_to_string(std::io::stdin()).map_err(|source| CliError::Read {
                path: path.clone(),
                source,
            })?
        } else {
            std::fs::read_to_string(&path).map_err(|source| CliError::Read {
                path: path.clone(),
                source,
            })?
        };
        let name = if path.as_os_str() == "-" {
            "<stdin>".to_string()
        } else {
            path.display().to_string()
        };
        out.push(SourceText { name, text });
    }
    Ok(out)
}

/// Parses every source into one batch. Syntax errors of every file are reported together.
pub fn parse_sources(sources: &[SourceText]) -> Result<Batch, CliError> {
    let mut batch = Batch::default();
    let mut errors = Vec::new();
    for s in sources {
        match ferry_server::documents::parse_text(&s.text) {
            Ok(docs) => {
                for (i, d) in docs.into_iter().enumerate() {
                    batch.documents.push(d);
                    batch.sources.push((s.name.clone(), i));
                }
            }
            Err(e) => errors.push(format!("{}: {e}", s.name)),
        }
    }
    if !errors.is_empty() {
        return Err(CliError::Invalid {
            summary: format!("{} file(s) could not be read", errors.len()),
            lines: errors,
        });
    }
    if batch.documents.is_empty() {
        return Err(CliError::Failed(
            "no documents found in the given files".into(),
        ));
    }
    Ok(batch)
}

impl Batch {
    /// `FILE: documents[i].rest: message` for a problem whose path starts with the batch index
    /// `documents[n]`; other problems are shown as they are.
    pub fn locate(&self, problem: &ApiProblem) -> String {
        if let Some((index, rest)) = split_batch_index(&problem.path)
            && let Some((file, local)) = self.sources.get(index)
        {
            return format!("{file}: documents[{local}]{rest}: {}", problem.message);
        }
        problem.to_string()
    }

    /// Every problem, located, one line each.
    pub fn locate_all(&self, problems: &[ApiProblem]) -> Vec<String> {
        problems.iter().map(|p| self.locate(p)).collect()
    }
}

/// `documents[12].stages[0]` → `(12, ".stages[0]")`.
fn split_batch_index(path: &str) -> Option<(usize, &str)> {
    let rest = path.strip_prefix("documents[")?;
    let close = rest.find(']')?;
    let index = rest[..close].parse().ok()?;
    Some((index, &rest[close + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(path: &str, message: &str) -> ApiProblem {
        ApiProblem {
            path: path.into(),
            message: message.into(),
        }
    }

    fn sources(items: &[(&str, &str)]) -> Vec<SourceText> {
        items
            .iter()
            .map(|(n, t)| SourceText {
                name: n.to_string(),
                text: t.to_string(),
            })
            .collect()
    }

    #[test]
    fn problems_map_back_to_files() {
        let batch = parse_sources(&sources(&[
            ("apps.yaml", "kind: Application\nname: a\n---\nkind: Application\nname: b\n"),
            ("p.json", r#"[{"application": "a", "name": "x", "stages": []}, {"application": "b", "name": "y", "stages": []}]"#),
        ]))
        .unwrap();
        assert_eq!(batch.documents.len(), 4);
        assert_eq!(
            batch.locate(&problem("documents[1].name", "bad")),
            "apps.yaml: documents[1].name: bad"
        );
        assert_eq!(
            batch.locate(&problem("documents[3].stages[0].type", "unknown")),
            "p.json: documents[1].stages[0].type: unknown"
        );
        assert_eq!(
            batch.locate(&problem("documents[2]", "whole")),
            "p.json: documents[0]: whole"
        );
        // Paths that name no document, or an index out of range, are shown as they are.
        assert_eq!(
            batch.locate(&problem("documents[9].x", "m")),
            "documents[9].x: m"
        );
        assert_eq!(batch.locate(&problem("", "m")), "m");
        assert_eq!(
            batch.locate(&problem("documents[x]", "m")),
            "documents[x]: m"
        );
    }

    #[test]
    fn syntax_errors_of_every_file_are_reported() {
        let err = parse_sources(&sources(&[
            ("a.yaml", "a: [\n"),
            ("b.json", "{nope"),
            ("c.yaml", "kind: Application\nname: c\n"),
        ]))
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("a.yaml: invalid YAML"), "{text}");
        assert!(text.contains("b.json: invalid JSON"), "{text}");
        assert!(matches!(
            parse_sources(&sources(&[("e.yaml", "")])),
            Err(CliError::Failed(_))
        ));
    }

    #[test]
    fn directories_expand_to_sorted_document_files() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["b.yaml", "a.json", "c.yml", "README.md", "d.YAML"] {
            std::fs::write(dir.path().join(name), "kind: Application\nname: x\n").unwrap();
        }
        std::fs::create_dir(dir.path().join("sub.yaml")).unwrap();
        let files = expand(&[dir.path().to_path_buf()]).unwrap();
        let names: Vec<String> = files
            .iter()
            .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["a.json", "b.yaml", "c.yml", "d.YAML"]);
        let empty = tempfile::tempdir().unwrap();
        assert!(expand(&[empty.path().to_path_buf()]).is_err());
        assert!(matches!(
            expand(&[dir.path().join("missing.yaml")]),
            Err(CliError::Read { .. })
        ));
    }
}
