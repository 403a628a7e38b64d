//! Choosing parameters by dotted-path patterns: `fc1.*`, `*.weight`, `blocks.*.conv.*`.
//!
//! A pattern is a glob over the whole dotted path in which `*` matches any run of characters,
//! dots included, and `?` one character.

use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::{Deserialize, Serialize};

use crate::{Error, ParamInfo, Result};

/// Which parameters a pass applies to: those matching any `include` pattern (all of them when
/// `include` is empty), of a kind in `kinds` (any kind when empty), minus those matching any
/// `exclude` pattern.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Selector {
    /// Patterns of paths to take; empty takes every parameter.
    pub include: Vec<String>,
    /// Patterns of paths to leave out, applied after `include`.
    pub exclude: Vec<String>,
    /// Layer kinds to take (`Linear`, `Conv2d`); empty takes every kind.
    pub kinds: Vec<String>,
}

impl Selector {
    /// A selector that takes every parameter.
    pub fn all() -> Self {
        Self::default()
    }

    /// The weights of every `Linear` and `Conv2d` layer: what quantization and pruning take
    /// by default (biases and normalization parameters are a tiny share of a model and
    /// sensitive to error).
    pub fn linear_and_conv_weights() -> Self {
        Self::all().include("*weight").kind("Linear").kind("Conv2d")
    }

    /// The weights of every `Linear`, `Conv2d` and `Embedding` layer: what quantization takes
    /// by default. An embedding is a lookup table, as large as the rest of a small text model,
    /// and its rows quantize one scale each as PyTorch's weight-only embedding quantization
    /// does; pruning leaves it out by default ([`Selector::linear_and_conv_weights`]), since
    /// zeroing a token's entries removes the token.
    pub fn quantizable_weights() -> Self {
        Self::linear_and_conv_weights().kind("Embedding")
    }

    /// Also take paths matching `pattern`.
    pub fn include(mut self, pattern: impl Into<String>) -> Self {
        self.include.push(pattern.into());
        self
    }

    /// Leave out paths matching `pattern`.
    pub fn exclude(mut self, pattern: impl Into<String>) -> Self {
        self.exclude.push(pattern.into());
        self
    }

    /// Take only parameters held by layers of this kind.
    pub fn kind(mut self, kind: impl Into<String>) -> Self {
        self.kinds.push(kind.into());
        self
    }

    /// Parse the patterns once.
    pub fn compile(&self) -> Result<Matcher> {
        Ok(Matcher {
            include: self
                .include
                .iter()
                .map(|p| compile(p))
                .collect::<Result<_>>()?,
            include_set: compile_set(&self.include)?,
            exclude_set: compile_set(&self.exclude)?,
            kinds: self.kinds.clone(),
            patterns: self.include.clone(),
            description: self.describe(),
        })
    }

    /// The parameters this selector takes, in the order given; an error if an include pattern
    /// matches none of them, since that is almost always a typo, or if nothing is left once
    /// kinds and excludes apply (`kind("Conv3d")`, `exclude("*")`): a pass over nothing would
    /// report success.
    pub fn select<'a>(&self, params: &'a [ParamInfo]) -> Result<Vec<&'a ParamInfo>> {
        self.compile()?.select(params)
    }
}

impl Selector {
    /// The selector in words, for errors: `include [*weight], kinds [Conv3d], exclude [*]`.
    fn describe(&self) -> String {
        let mut parts = vec![];
        for (name, list) in [
            ("include", &self.include),
            ("kinds", &self.kinds),
            ("exclude", &self.exclude),
        ] {
            if !list.is_empty() {
                parts.push(format!("{name} [{}]", list.join(", ")));
            }
        }
        if parts.is_empty() {
            "of every parameter".into()
        } else {
            parts.join(", ")
        }
    }
}

/// A compiled [`Selector`].
#[derive(Debug, Clone)]
pub struct Matcher {
    include: Vec<globset::GlobMatcher>,
    include_set: GlobSet,
    exclude_set: GlobSet,
    kinds: Vec<String>,
    patterns: Vec<String>,
    description: String,
}

impl Matcher {
    /// Whether a parameter with this path and layer kind is selected.
    pub fn matches(&self, path: &str, layer_kind: &str) -> bool {
        let included = self.include.is_empty() || self.include_set.is_match(path);
        let kind_ok = self.kinds.is_empty() || self.kinds.iter().any(|k| k == layer_kind);
        included && kind_ok && !self.exclude_set.is_match(path)
    }

    /// See [`Selector::select`].
    pub fn select<'a>(&self, params: &'a [ParamInfo]) -> Result<Vec<&'a ParamInfo>> {
        for (pattern, glob) in self.patterns.iter().zip(&self.include) {
            if !params.iter().any(|p| glob.is_match(&p.path)) {
                return Err(Error::PatternMatchesNothing {
                    pattern: pattern.clone(),
                    available: summarize_paths(params),
                });
            }
        }
        let selected: Vec<&ParamInfo> = params
            .iter()
            .filter(|p| self.matches(&p.path, &p.layer_kind))
            .collect();
        if selected.is_empty() {
            return Err(Error::EmptySelection {
                selector: self.description.clone(),
                available: summarize_kinds(params),
            });
        }
        Ok(selected)
    }
}

fn compile(pattern: &str) -> Result<globset::GlobMatcher> {
    Glob::new(pattern)
        .map(|g| g.compile_matcher())
        .map_err(|e| Error::InvalidPattern {
            pattern: pattern.to_string(),
            reason: e.kind().to_string(),
        })
}

fn compile_set(patterns: &[String]) -> Result<GlobSet> {
    let mut builder = GlobSetBuilder::new();
    for pattern in patterns {
        builder.add(Glob::new(pattern).map_err(|e| Error::InvalidPattern {
            pattern: pattern.clone(),
            reason: e.kind().to_string(),
        })?);
    }
    builder.build().map_err(|e| Error::InvalidPattern {
        pattern: patterns.join(", "),
        reason: e.to_string(),
    })
}

/// A few paths with their layer kinds: `fc1.weight (Linear), ...`.
fn summarize_kinds(params: &[ParamInfo]) -> String {
    if params.is_empty() {
        return "no parameters".into();
    }
    const SHOWN: usize = 8;
    let mut list: Vec<String> = params
        .iter()
        .take(SHOWN)
        .map(|p| format!("{} ({})", p.path, p.layer_kind))
        .collect();
    if params.len() > SHOWN {
        list.push("...".into());
    }
    list.join(", ")
}

fn summarize_paths(params: &[ParamInfo]) -> String {
    const SHOWN: usize = 8;
    let mut list: Vec<&str> = params.iter().take(SHOWN).map(|p| p.path.as_str()).collect();
    if params.len() > SHOWN {
        list.push("...");
    }
    list.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::ParamId;

    fn info(path: &str, kind: &str) -> ParamInfo {
        ParamInfo {
            path: path.into(),
            layer_kind: kind.into(),
            shape: vec![1],
            id: ParamId::new(),
        }
    }

    fn model() -> Vec<ParamInfo> {
        vec![
            info("fc1.weight", "Linear"),
            info("fc1.bias", "Linear"),
            info("blocks.0.conv.weight", "Conv2d"),
            info("blocks.0.conv.bias", "Conv2d"),
            info("fc2.weight", "Linear"),
        ]
    }

    fn paths(selected: Vec<&ParamInfo>) -> Vec<&str> {
        selected.into_iter().map(|p| p.path.as_str()).collect()
    }

    /// A selection that ends up empty is an error naming the selector and what the model has,
    /// not a pass over nothing.
    #[test]
    fn a_selection_of_nothing_is_an_error() {
        let model = model();
        for selector in [
            Selector::all().kind("Conv3d"),
            Selector::all().exclude("*"),
            Selector::all().include("fc1.*").kind("Conv2d"),
        ] {
            let err = selector.select(&model).unwrap_err();
            let Error::EmptySelection {
                selector: described,
                available,
            } = &err
            else {
                panic!("{err}")
            };
            assert!(available.contains("fc1.weight (Linear)"), "{err}");
            assert!(
                selector
                    .kinds
                    .iter()
                    .chain(&selector.exclude)
                    .all(|k| described.contains(k.as_str())),
                "{err}"
            );
        }
    }

    #[test]
    fn empty_selector_takes_everything() {
        let model = model();
        assert_eq!(Selector::all().select(&model).unwrap().len(), 5);
    }

    #[test]
    fn star_crosses_dots_and_exclude_wins() {
        let model = model();
        let selected = Selector::all()
            .include("*.weight")
            .exclude("fc2.*")
            .select(&model)
            .unwrap();
        assert_eq!(paths(selected), ["fc1.weight", "blocks.0.conv.weight"]);
    }

    #[test]
    fn kinds_filter_by_layer_type() {
        let model = model();
        let selected = Selector::all().kind("Conv2d").select(&model).unwrap();
        assert_eq!(
            paths(selected),
            ["blocks.0.conv.weight", "blocks.0.conv.bias"]
        );
    }

    #[test]
    fn a_pattern_that_matches_nothing_is_an_error() {
        let err = Selector::all()
            .include("fc9.*")
            .select(&model())
            .unwrap_err();
        assert!(
            matches!(err, Error::PatternMatchesNothing { ref pattern, .. } if pattern == "fc9.*")
        );
        assert!(err.to_string().contains("fc1.weight"));
    }

    #[test]
    fn a_malformed_pattern_is_an_error() {
        let err = Selector::all().include("fc1.[").compile().unwrap_err();
        assert!(matches!(err, Error::InvalidPattern { .. }));
    }

    #[test]
    fn unknown_config_fields_are_rejected() {
        let parsed: std::result::Result<Selector, _> =
            serde_json::from_str(r#"{"include": ["fc1.*"], "exlcude": []}"#);
        assert!(parsed.is_err());
    }
}
