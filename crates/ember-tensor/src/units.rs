//! Units of a layer (the neurons of a `Linear`, the filters of a convolution) and the
//! parameters that must shrink together when one is removed: a dependency group. The model
//! that knows its wiring declares its groups; structured pruning (`ember_prune::structured`)
//! scores the units and cuts every slice of a group at once.

use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use crate::{Classifier, Input};

/// Where a group's units lie in one parameter: unit `u` is the elements
/// `u * block .. (u + 1) * block` along `axis` (`block` is 1 for a neuron; a convolution's
/// filter flattened into a `Linear`'s input covers `height * width` consecutive inputs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitSlice {
    /// The parameter's dotted path.
    pub path: String,
    /// The axis that indexes the units.
    pub axis: usize,
    /// Elements per unit along that axis.
    pub block: usize,
}

impl UnitSlice {
    /// One element per unit along `axis` of `path`.
    pub fn new(path: impl Into<String>, axis: usize) -> Self {
        Self {
            path: path.into(),
            axis,
            block: 1,
        }
    }

    /// The same slice with `block` consecutive elements per unit.
    pub fn with_block(self, block: usize) -> Self {
        Self { block, ..self }
    }
}

/// A dependency group: `units` units that `producers` compute (the unit's weights and bias:
/// the first producer is the one criteria score) and `consumers` read (the next layers' input
/// slices). Removing a unit removes its slice from every one of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitGroup {
    /// A name for reports and errors: the producing layer's path.
    pub name: String,
    /// How many units the group has.
    pub units: usize,
    /// Parameters indexed by the units as outputs; the first is scored.
    pub producers: Vec<UnitSlice>,
    /// Parameters indexed by the units as inputs.
    pub consumers: Vec<UnitSlice>,
}

impl UnitGroup {
    /// Every slice of the group, producers first.
    pub fn slices(&self) -> impl Iterator<Item = &UnitSlice> {
        self.producers.iter().chain(&self.consumers)
    }
}

/// A classifier that also hands out what its groups' units output, for the criteria that look
/// at activations (APoZ, the average percentage of zeros after ReLU). burn has no forward
/// hooks, so the model that knows its layers says where they are.
pub trait UnitActivations<I: Input = Tensor<4>>: Classifier<I> {
    /// For a batch of inputs, each group's units' outputs after their nonlinearity, as
    /// `[batch, units, positions]` (positions: 1 for a neuron, `rows * cols` for a filter, the
    /// tokens for a sequence), named as the model's [`UnitGroup`]s are.
    fn unit_activations(&self, input: I) -> Vec<(String, Tensor<3>)>;
}
