//! `thau tool list|run`: the tools the model may call, and one run directly with JSON
//! arguments checked against its schema.

use thau::config::ThauConfig;
use thau::home::Home;
use thau::tools::image::GeneratedImage;
use thau::tools::{ToolManifest, ToolRegistry};
use thau::{Result, ThauError};

use super::args::ToolCommand;
use super::report::Report;

/// The built-in tools (their manifests are compiled in: a bad one is this build's fault).
fn registry() -> Result<ToolRegistry> {
    ToolRegistry::builtin().map_err(ThauError::Runtime)
}

/// `thau tool list`: every tool's manifest.
pub fn list() -> Result<Vec<ToolManifest>> {
    Ok(registry()?.manifests().cloned().collect())
}

/// `thau tool run NAME ARGUMENTS`: checks the call against the tool's schema and runs it
/// with the settings of the actor that owns it.
pub fn run_one(
    home: &Home,
    config: &ThauConfig,
    name: String,
    arguments: &str,
) -> Result<GeneratedImage> {
    let reg = registry()?;
    let arguments: serde_json::Value = serde_json::from_str(arguments)
        .map_err(|e| ThauError::Invalid(format!("the arguments are not JSON: {e}")))?;
    let call = reg
        .check(thau::tools::RawCall { name, arguments })
        .map_err(|e| ThauError::Invalid(e.to_string()))?;
    // Only generate_image exists; a new tool adds its arm here and in the ToolRouter.
    let specs = thau::runtime::agent_specs(home, config)?;
    let params = specs
        .get(&thau::runtime::agents::ActorKind::ImageTool)
        .map(|s| thau::actors::image_tool::ImageToolParams::from_spec(&s.params))
        .transpose()
        .map_err(|e| ThauError::Invalid(format!("agents/image_tool.toml [params]: {e}")))?
        .unwrap_or_default();
    let req = thau::tools::image::ImageRequest::from_arguments(&call.arguments)
        .map_err(|e| ThauError::Invalid(e.to_string()))?;
    let p = req
        .resolve(&params.defaults())
        .map_err(|e| ThauError::Invalid(e.to_string()))?;
    let mut backend = params.backend().map_err(ThauError::Invalid)?;
    thau::tools::image::generate_and_save(backend.as_mut(), &p, &home.images()).map_err(|e| {
        ThauError::Actor {
            actor: "image_tool".into(),
            message: e.to_string(),
        }
    })
}

/// `thau tool list|run`.
pub fn run(command: ToolCommand, home: &Home, config: &ThauConfig) -> Result<Box<dyn Report>> {
    Ok(match command {
        ToolCommand::List => Box::new(list()?),
        ToolCommand::Run { name, arguments } => Box::new(run_one(home, config, name, &arguments)?),
    })
}
