//! How commands that list things print them: an aligned table for people (the default), or
//! `-o json` / `-o yaml` for scripts (the same fields, snake_case).

use clap::ValueEnum;
use serde::Serialize;

use crate::Error;

/// The `-o` / `--output` format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns with a header line.
    #[default]
    Table,
    /// A JSON array of objects.
    Json,
    /// A YAML sequence of mappings.
    Yaml,
}

/// A row of a listing.
pub trait Row: Serialize {
    /// The column headers of the table.
    const HEADERS: &'static [&'static str];
    /// The row's cells, one per header.
    fn cells(&self) -> Vec<String>;
}

/// Prints `rows` to stdout in `format`.
pub fn print<R: Row>(rows: &[R], format: Format) -> Result<(), Error> {
    print!("{}", render(rows, format)?);
    Ok(())
}

fn render<R: Row>(rows: &[R], format: Format) -> Result<String, Error> {
    match format {
        Format::Table => Ok(table(R::HEADERS, rows.iter().map(Row::cells))),
        Format::Json => serde_json::to_string_pretty(rows)
            .map(|json| json + "\n")
            .map_err(|e| Error::Output {
                format: "json",
                reason: e.to_string(),
            }),
        Format::Yaml if rows.is_empty() => Ok("[]\n".to_owned()),
        Format::Yaml => to_yaml(&rows),
    }
}

/// `value` as YAML, long strings (OCI references, messages) on one line rather than folded.
pub fn to_yaml<T: Serialize>(value: &T) -> Result<String, Error> {
    let mut options = serde_saphyr::SerializerOptions::default();
    options.prefer_block_scalars = false;
    serde_saphyr::to_string_with_options(value, options).map_err(|e| Error::Output {
        format: "yaml",
        reason: e.to_string(),
    })
}

/// Columns separated by at least two spaces, padded to the widest cell; the last column unpadded.
pub fn table(headers: &[&str], rows: impl Iterator<Item = Vec<String>>) -> String {
    let mut lines: Vec<Vec<String>> = vec![headers.iter().map(|h| (*h).to_owned()).collect()];
    lines.extend(rows);
    let mut widths = vec![0; headers.len()];
    for line in &lines {
        for (width, cell) in widths.iter_mut().zip(line) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    for line in &lines {
        let last = line.len().saturating_sub(1);
        for (i, cell) in line.iter().enumerate() {
            if i == last {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            }
        }
        text.truncate(text.trim_end().len());
        text.push('\n');
    }
    text
}

/// `text` with every line indented by two spaces.
pub fn indent(text: &str) -> String {
    text.lines().map(|line| format!("  {line}\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Fruit {
        name: &'static str,
        count: u32,
    }

    impl Row for Fruit {
        const HEADERS: &'static [&'static str] = &["NAME", "COUNT"];
        fn cells(&self) -> Vec<String> {
            vec![self.name.to_owned(), self.count.to_string()]
        }
    }

    #[test]
    fn renders_each_format() {
        let rows = [
            Fruit {
                name: "fig",
                count: 12,
            },
            Fruit {
                name: "banana",
                count: 3,
            },
        ];
        assert_eq!(
            render(&rows, Format::Table).unwrap(),
            "NAME    COUNT\nfig     12\nbanana  3\n"
        );
        let json: serde_json::Value =
            serde_json::from_str(&render(&rows, Format::Json).unwrap()).unwrap();
        assert_eq!(json[1]["name"], "banana");
        let yaml = render(&rows, Format::Yaml).unwrap();
        assert!(yaml.contains("name: fig"), "{yaml}");
        assert_eq!(render::<Fruit>(&[], Format::Yaml).unwrap(), "[]\n");
        assert_eq!(render::<Fruit>(&[], Format::Json).unwrap(), "[]\n");
    }
}
