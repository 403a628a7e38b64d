//! Walking every float parameter of any burn module with its dotted path and layer kind.

use std::collections::BTreeMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::tensor::{Tensor, TensorData};
use serde::Serialize;

use crate::{Error, Result};

/// One float parameter of a module, as a walk finds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ParamInfo {
    /// Dotted path from the model's root: `fc1.weight`, `blocks.0.conv.bias`.
    pub path: String,
    /// The type of the module that holds the parameter: `Linear`, `Conv2d`, `BatchNorm`.
    pub layer_kind: String,
    /// The parameter's shape.
    pub shape: Vec<usize>,
    /// burn's id of the parameter, the key of optimizer state and gradients.
    #[serde(skip)]
    pub id: ParamId,
}

impl ParamInfo {
    /// How many elements the parameter holds.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The parameter's own name, the last path segment (`weight`, `bias`).
    pub fn name(&self) -> &str {
        self.path.rsplit('.').next().unwrap_or(&self.path)
    }

    /// Which axis of a weight runs over the layer's inputs and which over its outputs, the one
    /// rule every pass uses (per-channel scales, per-group scales, N:M groups). burn stores a
    /// `Linear` weight as `[d_input, d_output]`; every other weight of rank 2 or more keeps
    /// PyTorch's order, outputs first: a convolution's `[out, in, kh, kw]`, an embedding's
    /// `[tokens, dim]` (one row per token, as PyTorch quantizes it). `None` below rank 2.
    pub fn weight_axes(&self) -> Option<WeightAxes> {
        if self.shape.len() < 2 {
            None
        } else if self.layer_kind == "Linear" {
            Some(WeightAxes {
                input: 0,
                output: 1,
            })
        } else {
            Some(WeightAxes {
                input: 1,
                output: 0,
            })
        }
    }
}

/// The input and output axes of a weight, as [`ParamInfo::weight_axes`] finds them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WeightAxes {
    /// The axis a matmul or convolution reduces over.
    pub input: usize,
    /// The axis of the output units (neurons, filters, rows).
    pub output: usize,
}

/// A parameter with its value, flattened so that parameters of every rank fit one type;
/// [`ParamInfo::shape`] gives the shape back.
#[derive(Debug, Clone)]
pub struct ParamValue {
    /// Where the parameter is and what it is.
    pub info: ParamInfo,
    /// Its value (after any reparameterization, as `Param::val` gives it), flattened.
    pub flat: Tensor<1>,
}

impl ParamValue {
    /// The value in its own shape.
    pub fn tensor<const D: usize>(&self) -> Tensor<D> {
        let shape: [usize; D] =
            std::array::from_fn(|i| self.info.shape.get(i).copied().unwrap_or(1));
        self.flat.clone().reshape(shape)
    }
}

/// Every float parameter of `module`, in declaration order.
pub fn params<M: Module>(module: &M) -> Vec<ParamInfo> {
    // A reparameterization keeps its parameter's shape: the stored bases tell everything, and
    // nothing is evaluated (a broken mask is reported by `check_masks`, not hit here).
    let mut walker = Walker::default();
    module.visit(&mut walker);
    walker.found.into_iter().map(|p| p.info).collect()
}

/// Every float parameter of `module` with its value, in declaration order.
pub fn param_values<M: Module>(module: &M) -> Vec<ParamValue> {
    let mut walker = Walker::default();
    // burn visits a reparameterized parameter through its stored base; folding the
    // reparameterizations first gives the effective values (a masked weight's zeros).
    module.clone().materialize().visit(&mut walker);
    walker.found
}

/// Initialize every parameter of `module` now. burn initializes parameters lazily, on first
/// use, drawing from the device RNG as it is *then*; forcing it right after construction makes
/// `device.seed(s)` followed by building the model decide the initial values, whatever runs in
/// between.
pub fn init_now<M: Module>(module: M) -> M {
    module.visit(&mut InitNow);
    module
}

/// Replace the stored values of float parameters by path, keeping their ids and any attached
/// mask (which still applies on top). Every path must name a parameter of `module` and every
/// value must have as many elements as it; values are taken in row-major order and stored in
/// the parameter's dtype.
pub fn set_param_values<M: Module>(module: M, values: &BTreeMap<String, Vec<f32>>) -> Result<M> {
    let infos = params(&module);
    for (path, flat) in values {
        let info = infos
            .iter()
            .find(|p| &p.path == path)
            .ok_or_else(|| Error::InvalidConfig {
                field: "parameter path",
                value: path.clone(),
                reason: "no float parameter of the model has this path",
            })?;
        if flat.len() != info.numel() {
            return Err(Error::ValueShape {
                path: path.clone(),
                expected: info.shape.clone(),
                actual: flat.len(),
            });
        }
    }
    Ok(module.map(&mut SetValues {
        values,
        path: Vec::new(),
    }))
}

struct SetValues<'a> {
    values: &'a BTreeMap<String, Vec<f32>>,
    path: Vec<String>,
}

impl ModuleMapper for SetValues<'_> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        match self.values.get(&self.path.join(".")) {
            // The new value is a fresh leaf: it must track gradients as the old one did, or
            // the module would stop training after its values are set.
            Some(flat) => param.map(|old| {
                let data = TensorData::new(flat.clone(), old.shape());
                Tensor::<D>::from_data(data, &old.device())
                    .cast(old.dtype())
                    .set_require_grad(old.is_require_grad())
            }),
            None => param,
        }
    }
}

struct InitNow;

impl ModuleVisitor for InitNow {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let _ = param.val();
    }
}

/// Tracks the path while burn's derive walks the module tree: `enter_module(name, container)`
/// names the field and the type of the struct that holds it, so the kind of a parameter is the
/// container of its own field.
#[derive(Default)]
struct Walker {
    stack: Vec<(String, String)>,
    found: Vec<ParamValue>,
}

impl ModuleVisitor for Walker {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.stack
            .push((name.to_string(), container_type.to_string()));
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.stack.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let path = self
            .stack
            .iter()
            .map(|(name, _)| name.as_str())
            .collect::<Vec<_>>()
            .join(".");
        let layer_kind = self
            .stack
            .last()
            .map(|(_, container)| container_name(container))
            .unwrap_or_default();
        let value = param.val();
        self.found.push(ParamValue {
            info: ParamInfo {
                path,
                layer_kind,
                shape: value.shape().to_vec(),
                id: param.id,
            },
            flat: value.flatten(0, D.saturating_sub(1)),
        });
    }
}

/// `Struct:Linear` -> `Linear`; `Vec` and other containers stay as they are.
fn container_name(container: &str) -> String {
    container
        .split_once(':')
        .map_or(container, |(_, name)| name)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::{Linear, LinearConfig, conv::Conv2d, conv::Conv2dConfig};
    use burn::tensor::Device;

    #[derive(Module, Debug)]
    struct Block {
        conv: Conv2d,
        heads: Vec<Linear>,
    }

    #[derive(Module, Debug)]
    struct Net {
        fc1: Linear,
        block: Block,
    }

    #[test]
    fn paths_kinds_and_shapes_of_a_nested_model() {
        let _seeded = crate::testing::seeded_lock();
        let device = Device::flex();
        let net = Net {
            fc1: LinearConfig::new(4, 3).init(&device),
            block: Block {
                conv: Conv2dConfig::new([2, 5], [3, 3]).init(&device),
                heads: vec![LinearConfig::new(3, 2).with_bias(false).init(&device)],
            },
        };
        let found: Vec<(String, String, Vec<usize>)> = params(&net)
            .into_iter()
            .map(|p| (p.path, p.layer_kind, p.shape))
            .collect();
        let expected = [
            ("fc1.weight", "Linear", vec![4, 3]),
            ("fc1.bias", "Linear", vec![3]),
            ("block.conv.weight", "Conv2d", vec![5, 2, 3, 3]),
            ("block.conv.bias", "Conv2d", vec![5]),
            ("block.heads.0.weight", "Linear", vec![3, 2]),
        ]
        .map(|(p, k, s)| (p.to_string(), k.to_string(), s));
        assert_eq!(found, expected);
    }

    #[test]
    fn init_now_makes_the_seed_decide_the_values() {
        let _seeded = crate::testing::seeded_lock();
        let device = Device::flex();
        let build = |seed| {
            device.seed(seed);
            init_now(LinearConfig::new(5, 4).init(&device))
        };
        let (a, b) = (build(3), build(3));
        // Random draws in between must not change an already initialized model.
        let _ = Tensor::<1>::random([100], burn::tensor::Distribution::Default, &device);
        a.weight
            .val()
            .into_data()
            .assert_eq(&b.weight.val().into_data(), true);
        assert_ne!(
            a.weight.val().into_data(),
            build(4).weight.val().into_data()
        );
    }

    #[test]
    fn values_come_back_in_their_own_shape() {
        let _seeded = crate::testing::seeded_lock();
        let device = Device::flex();
        let linear = LinearConfig::new(4, 3).init(&device);
        let values = param_values(&linear);
        assert_eq!(values[0].info.name(), "weight");
        assert_eq!(values[0].info.numel(), 12);
        let weight: Tensor<2> = values[0].tensor();
        weight
            .into_data()
            .assert_eq(&linear.weight.val().into_data(), true);
    }

    /// Values set on a trainable model stay trainable: the gradient reaches every parameter
    /// whose value was replaced, and a frozen one stays frozen.
    #[test]
    fn set_values_keep_each_parameter_trainable_or_frozen() {
        let _seeded = crate::testing::seeded_lock();
        let device = Device::flex().autodiff();
        let mut linear = LinearConfig::new(2, 1).init(&device);
        linear.bias = linear.bias.map(|b| b.map(|t| t.set_require_grad(false)));
        let values = BTreeMap::from([
            ("weight".to_string(), vec![3.0, -1.0]),
            ("bias".to_string(), vec![0.5]),
        ]);
        let linear = set_param_values(linear, &values).unwrap();
        let x = Tensor::<2>::from_data(TensorData::new(vec![2.0f32, 5.0], [1, 2]), &device);
        let grads = linear.forward(x).sum().backward();
        // d(sum(x W + b)) / dW = xᵀ.
        let weight_grad = linear.weight.val().grad(&grads).unwrap().into_data();
        weight_grad.assert_eq(&TensorData::new(vec![2.0f32, 5.0], [2, 1]), true);
        assert!(linear.bias.unwrap().val().grad(&grads).is_none());
    }
}
