//! Guest ABI v1 in WIT (`docs/guest-abi.wit`, embedded as [`WIT`]) and a minimal reader of it, so
//! that tests can check the WIT against [`HOST_FUNCTIONS`](crate::HOST_FUNCTIONS) and against the
//! host functions the sandbox worker registers. (Feature `wit`; it needs `std`.)
//!
//! The reader takes the subset of WIT the file uses, and refuses anything else with the line it is
//! on: one `package` with a version, `interface`s holding `type` aliases and functions, `world`s
//! holding `import <interface>;` and function exports. Every type must be a scalar that lowers to one
//! core value (`bool`, `char`, `u8`–`u32`, `s8`–`s32` to `i32`; `u64`, `s64` to `i64`), or an alias
//! of one: the ABI is core WebAssembly, and with scalars only the canonical ABI's lowering of a WIT
//! function is its core signature. Names map to the core ABI with `-` written `_`.

extern crate std;

use std::borrow::ToOwned;
use std::format;
use std::string::String;
use std::vec::Vec;

use crate::{HostFunction, ValType};

/// The WIT description of guest ABI v1 (`docs/guest-abi.wit`).
pub const WIT: &str = include_str!("../../docs/guest-abi.wit");

/// A function as the core ABI sees it: its core name and value types.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct CoreFunction {
    pub name: String,
    pub params: Vec<ValType>,
    pub results: Vec<ValType>,
}

impl From<&HostFunction> for CoreFunction {
    fn from(f: &HostFunction) -> CoreFunction {
        CoreFunction {
            name: f.name.to_owned(),
            params: f.params.to_vec(),
            results: f.results.to_vec(),
        }
    }
}

/// An `interface`: its name and functions, lowered, in the order written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub functions: Vec<CoreFunction>,
}

/// A `world`: the interfaces it imports and the functions it exports, lowered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct World {
    pub name: String,
    pub imports: Vec<String>,
    pub exports: Vec<CoreFunction>,
}

/// A WIT document of the subset this module reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// `namespace:name`.
    pub package: String,
    /// The package version's major number.
    pub major: u32,
    pub interfaces: Vec<Interface>,
    pub worlds: Vec<World>,
}

impl Document {
    /// The interface named `name`.
    pub fn interface(&self, name: &str) -> Option<&Interface> {
        self.interfaces.iter().find(|i| i.name == name)
    }
}

/// Why a WIT document could not be read: the line and what was wrong there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WitError {
    pub line: usize,
    pub message: String,
}

impl core::fmt::Display for WitError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for WitError {}

/// Reads a WIT document.
pub fn parse(wit: &str) -> Result<Document, WitError> {
    let tokens = tokenize(wit)?;
    Parser {
        tokens,
        next: 0,
        last_line: 1,
    }
    .document()
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// An identifier, keyword, number or version (`%` of an explicit identifier removed).
    Word(String),
    /// `{ } ( ) : ; , = @ /` or `->`.
    Punct(&'static str),
}

fn tokenize(wit: &str) -> Result<Vec<(Token, usize)>, WitError> {
    let mut tokens = Vec::new();
    let mut line = 1;
    let mut rest = wit;
    while let Some(c) = rest.chars().next() {
        if c == '\n' {
            line += 1;
            rest = &rest[1..];
        } else if c.is_whitespace() {
            rest = &rest[c.len_utf8()..];
        } else if rest.starts_with("//") {
            rest = rest.find('\n').map_or("", |end| &rest[end..]);
        } else if rest.starts_with("/*") {
            let end = rest.find("*/").ok_or_else(|| WitError {
                line,
                message: "unterminated comment".to_owned(),
            })?;
            line += rest[..end].matches('\n').count();
            rest = &rest[end + 2..];
        } else if let Some(punct) = ["->", "{", "}", "(", ")", ":", ";", ",", "=", "@", "/"]
            .into_iter()
            .find(|p| rest.starts_with(p))
        {
            tokens.push((Token::Punct(punct), line));
            rest = &rest[punct.len()..];
        } else if c.is_ascii_alphanumeric() || c == '%' {
            let word = rest.strip_prefix('%').unwrap_or(rest);
            let len = word
                .char_indices()
                .find(|&(i, ch)| {
                    !(ch.is_ascii_alphanumeric() || ch == '.' || ch == '-')
                        || word[i..].starts_with("->")
                })
                .map_or(word.len(), |(i, _)| i);
            tokens.push((Token::Word(word[..len].to_owned()), line));
            rest = &word[len..];
        } else {
            return Err(WitError {
                line,
                message: format!("unexpected character {c:?}"),
            });
        }
    }
    Ok(tokens)
}

struct Parser {
    tokens: Vec<(Token, usize)>,
    next: usize,
    last_line: usize,
}

impl Parser {
    fn error(&self, message: String) -> WitError {
        let line = self.tokens.get(self.next).map_or(self.last_line, |t| t.1);
        WitError { line, message }
    }

    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.next).map(|t| &t.0)
    }

    fn bump(&mut self) -> Option<Token> {
        let (token, line) = self.tokens.get(self.next)?.clone();
        self.next += 1;
        self.last_line = line;
        Some(token)
    }

    fn found(&self) -> String {
        match self.peek() {
            Some(Token::Word(w)) => format!("`{w}`"),
            Some(Token::Punct(p)) => format!("`{p}`"),
            None => "the end".to_owned(),
        }
    }

    fn punct(&mut self, p: &'static str) -> Result<(), WitError> {
        if self.peek() == Some(&Token::Punct(p)) {
            self.bump();
            Ok(())
        } else {
            Err(self.error(format!("expected `{p}`, found {}", self.found())))
        }
    }

    fn eat(&mut self, p: &'static str) -> bool {
        let matched = self.peek() == Some(&Token::Punct(p));
        if matched {
            self.bump();
        }
        matched
    }

    fn word(&mut self, what: &str) -> Result<String, WitError> {
        match self.peek() {
            Some(Token::Word(w)) => {
                let w = w.clone();
                self.bump();
                Ok(w)
            }
            _ => Err(self.error(format!("expected {what}, found {}", self.found()))),
        }
    }

    fn keyword(&mut self, keyword: &str) -> Result<(), WitError> {
        if self.peek() == Some(&Token::Word(keyword.to_owned())) {
            self.bump();
            Ok(())
        } else {
            Err(self.error(format!("expected `{keyword}`, found {}", self.found())))
        }
    }

    fn document(mut self) -> Result<Document, WitError> {
        self.keyword("package")?;
        let namespace = self.word("a package namespace")?;
        self.punct(":")?;
        let name = self.word("a package name")?;
        self.punct("@")?;
        let version = self.word("a version")?;
        let major = version
            .split('.')
            .next()
            .and_then(|major| major.parse().ok())
            .filter(|_| version.split('.').count() == 3)
            .ok_or_else(|| self.error(format!("`{version}` is not a major.minor.patch version")))?;
        self.punct(";")?;
        let mut document = Document {
            package: format!("{namespace}:{name}"),
            major,
            interfaces: Vec::new(),
            worlds: Vec::new(),
        };
        while self.peek().is_some() {
            match self.word("`interface` or `world`")?.as_str() {
                "interface" => {
                    let interface = self.interface()?;
                    document.interfaces.push(interface);
                }
                "world" => {
                    let world = self.world(&document)?;
                    document.worlds.push(world);
                }
                other => {
                    self.next -= 1;
                    return Err(self.error(format!(
                        "expected `interface` or `world`, found `{other}` (not in the subset read here)"
                    )));
                }
            }
        }
        Ok(document)
    }

    fn interface(&mut self) -> Result<Interface, WitError> {
        let name = self.word("an interface name")?;
        self.punct("{")?;
        let mut aliases: Vec<(String, ValType)> = Vec::new();
        let mut functions = Vec::new();
        while !self.eat("}") {
            if self.peek() == Some(&Token::Word("type".to_owned())) {
                self.bump();
                let alias = self.word("a type name")?;
                self.punct("=")?;
                let ty = self.ty(&aliases)?;
                self.punct(";")?;
                aliases.push((alias, ty));
            } else {
                let name = self.word("a function or `type`")?;
                self.punct(":")?;
                functions.push(self.function(name, &aliases)?);
            }
        }
        Ok(Interface { name, functions })
    }

    fn world(&mut self, document: &Document) -> Result<World, WitError> {
        let name = self.word("a world name")?;
        self.punct("{")?;
        let mut world = World {
            name,
            imports: Vec::new(),
            exports: Vec::new(),
        };
        while !self.eat("}") {
            match self.word("`import` or `export`")?.as_str() {
                "import" => {
                    let interface = self.word("an interface name")?;
                    if document.interface(&interface).is_none() {
                        self.next -= 1;
                        return Err(self.error(format!("no interface `{interface}`")));
                    }
                    self.punct(";")?;
                    world.imports.push(interface);
                }
                "export" => {
                    let name = self.word("an export name")?;
                    self.punct(":")?;
                    let function = self.function(name, &[])?;
                    world.exports.push(function);
                }
                other => {
                    self.next -= 1;
                    return Err(
                        self.error(format!("expected `import` or `export`, found `{other}`"))
                    );
                }
            }
        }
        Ok(world)
    }

    /// `func(name: type, ...) [-> type];`, after `name:`.
    fn function(
        &mut self,
        name: String,
        aliases: &[(String, ValType)],
    ) -> Result<CoreFunction, WitError> {
        self.keyword("func")?;
        self.punct("(")?;
        let mut params = Vec::new();
        while !self.eat(")") {
            if !params.is_empty() {
                self.punct(",")?;
            }
            self.word("a parameter name")?;
            self.punct(":")?;
            params.push(self.ty(aliases)?);
        }
        let mut results = Vec::new();
        if self.eat("->") {
            results.push(self.ty(aliases)?);
        }
        self.punct(";")?;
        Ok(CoreFunction {
            name: name.replace('-', "_"),
            params,
            results,
        })
    }

    /// A scalar type or an alias of one, lowered to its core value type.
    fn ty(&mut self, aliases: &[(String, ValType)]) -> Result<ValType, WitError> {
        let name = self.word("a type")?;
        let lowered = match name.as_str() {
            "bool" | "char" | "u8" | "u16" | "u32" | "s8" | "s16" | "s32" => Some(ValType::I32),
            "u64" | "s64" => Some(ValType::I64),
            alias => aliases.iter().find(|(a, _)| a == alias).map(|(_, ty)| *ty),
        };
        lowered.ok_or_else(|| {
            self.next -= 1;
            self.error(format!(
                "type `{name}` is not a scalar that lowers to i32 or i64, nor an alias of one"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        ABI_SECTION, ABI_VERSION, HANDLE_EXPORT, HOST_FUNCTIONS, HOST_MODULE, MEMORY_MODULE,
        MEMORY_NAME,
    };
    use std::string::ToString;

    fn abi() -> Document {
        parse(WIT).unwrap_or_else(|e| panic!("docs/guest-abi.wit: {e}"))
    }

    #[test]
    fn the_wit_lists_the_host_functions_of_the_abi_with_their_types() {
        let document = abi();
        assert_eq!(document.package, "edgefleet:guest-abi");
        assert_eq!(document.major, ABI_VERSION);
        let host = document.interface("host").expect("interface host");
        let expected: Vec<CoreFunction> = HOST_FUNCTIONS.iter().map(CoreFunction::from).collect();
        assert_eq!(host.functions, expected, "in docs/guest-abi.md's order");
        assert_eq!(document.interfaces.len(), 1);
    }

    #[test]
    fn the_wit_world_imports_the_host_and_exports_the_handler() {
        let document = abi();
        let [world] = &document.worlds[..] else {
            panic!("one world: {:?}", document.worlds)
        };
        assert_eq!(world.name, "handler");
        assert_eq!(world.imports, ["host"]);
        assert_eq!(
            world.exports,
            [CoreFunction {
                name: HANDLE_EXPORT.to_owned(),
                params: Vec::new(),
                results: std::vec![ValType::I32],
            }]
        );
    }

    /// What WIT cannot express is stated in its comments, with the ABI's own names.
    #[test]
    fn the_wit_names_the_core_abi_it_describes() {
        for name in [
            HOST_MODULE,
            ABI_SECTION,
            HANDLE_EXPORT,
            &format!("{MEMORY_MODULE}.{MEMORY_NAME}"),
        ] {
            assert!(
                WIT.contains(&format!("`{name}`")),
                "docs/guest-abi.wit names {name}"
            );
        }
        assert_eq!(HOST_MODULE, format!("edgefleet_v{}", abi().major));
    }

    #[test]
    fn a_changed_signature_no_longer_agrees() {
        let changed = WIT.replace("now-ms: func() -> s64;", "now-ms: func() -> s32;");
        let document = parse(&changed).unwrap();
        let expected: Vec<CoreFunction> = HOST_FUNCTIONS.iter().map(CoreFunction::from).collect();
        assert_ne!(document.interface("host").unwrap().functions, expected);
        let renamed = WIT.replace("state-get: func", "state-read: func");
        let document = parse(&renamed).unwrap();
        assert_ne!(document.interface("host").unwrap().functions, expected);
    }

    #[test]
    fn lowering_follows_the_canonical_abi_for_scalars() {
        let document = parse(
            "package a:b@2.1.0;\n\
             interface i { type t = u64; type u = t; f: func(a: bool, b: u8, c: s16, d: char, e: u) -> %s64; }",
        )
        .unwrap();
        assert_eq!(document.major, 2);
        use ValType::{I32, I64};
        assert_eq!(
            document.interface("i").unwrap().functions,
            [CoreFunction {
                name: "f".to_owned(),
                params: std::vec![I32, I32, I32, I32, I64],
                results: std::vec![I64],
            }]
        );
    }

    fn error(wit: &str) -> String {
        parse(wit).unwrap_err().to_string()
    }

    #[test]
    fn what_the_reader_does_not_take_is_an_error_naming_the_line() {
        assert_eq!(
            error("package a:b@1.0.0;\ninterface i {\n  f: func(x: string);\n}"),
            "line 3: type `string` is not a scalar that lowers to i32 or i64, nor an alias of one"
        );
        assert_eq!(
            error("package a:b@1.0.0;\ninterface i {\n  f: func(x: f32);\n}"),
            "line 3: type `f32` is not a scalar that lowers to i32 or i64, nor an alias of one"
        );
        assert_eq!(
            error("package a:b@1.0.0;\ninterface i {\n  record r { x: u32 }\n}"),
            "line 3: expected `:`, found `r`"
        );
        assert_eq!(
            error("package a:b@1.0.0;\n\ninterface i { f: func() }"),
            "line 3: expected `;`, found `}`"
        );
        assert_eq!(
            error("package a:b@1.0.0;\nworld w { import j; }"),
            "line 2: no interface `j`"
        );
        assert_eq!(
            error("package a:b@1;"),
            "line 1: `1` is not a major.minor.patch version"
        );
        assert_eq!(
            error("package a:b@1.0.0;\nuse x:y/z;"),
            "line 2: expected `interface` or `world`, found `use` (not in the subset read here)"
        );
        assert_eq!(error("/* open\n\n"), "line 1: unterminated comment");
        assert_eq!(
            error("package a:b@1.0.0;\ninterface i {"),
            "line 2: expected a function or `type`, found the end"
        );
    }
}
