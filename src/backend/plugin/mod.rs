//! Docker volume plugins, spoken to directly over the plugin protocol (DESIGN §4).

/// Plugin discovery found no plugin of that name.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {}

/// A failed plugin call.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {}
