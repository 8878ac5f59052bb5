//! The explicit registry of stage types: the only way a stage type reaches the engine.

use crate::stage::StageType;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Stage types by key.
#[derive(Clone, Default)]
pub struct Registry {
    types: BTreeMap<&'static str, Arc<dyn StageType>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Registry::default()
    }

    /// Adds a stage type; a later registration of the same key replaces the earlier one.
    pub fn register(&mut self, stage: impl StageType) -> &mut Self {
        self.types.insert(stage.type_name(), Arc::new(stage));
        self
    }

    /// The stage type with this key.
    pub fn get(&self, key: &str) -> Option<&Arc<dyn StageType>> {
        self.types.get(key)
    }

    /// Every registered key, sorted.
    pub fn keys(&self) -> Vec<&'static str> {
        self.types.keys().copied().collect()
    }
}
