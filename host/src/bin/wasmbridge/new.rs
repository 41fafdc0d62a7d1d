//! `wasmbridge new`: writes a ready project from one of the templates in guests/templates,
//! which are built into the binary.

use std::path::{Path, PathBuf};

use clap::Parser;
use include_dir::{Dir, include_dir};
use wasmtime::Result;
use wasmtime::bail;
use wasmtime::error::Context as _;

static TEMPLATES: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/../guests/templates");

/// The WASI packages wasmbridge pins (wit/deps): a template with a `wit/world.wit` gets them,
/// unless it brings its own (js-http: the version its JavaScript engine was built against).
static PINNED_WIT: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/../wit/deps");

/// Create a project from a template: rust-http, rust-http3, js-http, python-cgi, php-app, …
#[derive(Parser)]
pub struct NewCommand {
    /// The template (an unknown name lists them all).
    #[arg(value_name = "TEMPLATE")]
    template: String,

    /// Where to write the project: a new or empty directory, whose name names the project.
    #[arg(value_name = "DIR")]
    dir: PathBuf,
}

impl NewCommand {
    pub fn execute(self) -> Result<()> {
        let Some(template) = TEMPLATES.get_dir(&self.template) else {
            bail!(
                "there is no template `{}`; the templates are:\n{}",
                self.template,
                list()
            );
        };
        if std::fs::read_dir(&self.dir).is_ok_and(|mut entries| entries.next().is_some()) {
            bail!(
                "{} is not empty: `wasmbridge new` writes only into a new or empty directory",
                self.dir.display()
            );
        }
        let name = project_name(&self.dir)?;
        write(template, template.path(), &self.dir, &name)?;
        let wit = template.path().join("wit");
        if template.get_file(wit.join("world.wit")).is_some()
            && template.get_dir(wit.join("deps")).is_none()
        {
            write(
                &PINNED_WIT,
                PINNED_WIT.path(),
                &self.dir.join("wit/deps"),
                &name,
            )?;
        }
        println!(
            "Created {} from the {} template: see {}",
            name,
            self.template,
            self.dir.join("README.md").display()
        );
        Ok(())
    }
}

/// Every template with the title line of its README.
fn list() -> String {
    TEMPLATES
        .dirs()
        .map(|dir| {
            let title = dir
                .get_file(dir.path().join("README.md"))
                .and_then(|readme| readme.contents_utf8())
                .and_then(|text| text.lines().next())
                .and_then(|line| line.split_once(" — "))
                .map_or("", |(_, title)| title);
            format!("  {:<12} {title}", dir.path().display())
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The project's name, from the directory's: what a Cargo package may be called.
fn project_name(dir: &Path) -> Result<String> {
    let absolute = std::path::absolute(dir)?;
    let name: String = absolute
        .file_name()
        .context("the directory has no name to give the project")?
        .to_string_lossy()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        bail!("`{name}` cannot name a project: start the directory's name with a letter");
    }
    Ok(name)
}

/// Writes the template's files under `to`, with `{{name}}` and `{{crate}}` filled in.
fn write(dir: &Dir<'_>, root: &Path, to: &Path, name: &str) -> Result<()> {
    for file in dir.files() {
        let path = to.join(file.path().strip_prefix(root)?);
        std::fs::create_dir_all(path.parent().unwrap())?;
        let contents = match file.contents_utf8() {
            Some(text) => text
                .replace("{{name}}", name)
                .replace("{{crate}}", &name.replace('-', "_"))
                .into_bytes(),
            None => file.contents().to_vec(),
        };
        std::fs::write(&path, contents)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    for sub in dir.dirs() {
        write(sub, root, to, name)?;
    }
    Ok(())
}
