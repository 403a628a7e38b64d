//! Dependency groups found in a model's captured forward graph, so that a model prunes without
//! declaring its wiring by hand.
//!
//! The forward pass is recorded by burn's capture backend ([`ember_tensor::graph`]) and
//! followed operation by operation, tracking which tensors carry which layer's units along
//! which axis:
//! - a fully connected layer (a `Matmul` with a parameter `[in, out]`, or burn's `Linear`
//!   operation) and a convolution (`Conv2d`, one group) start a group: their outputs' units
//!   are the weight's output slices; the bias added to them and the batch norm that follows
//!   index the same units (producers);
//! - the layer that reads a group's tensor consumes it: its weight's input slice, in blocks of
//!   `height * width` when a feature map was flattened into a fully connected layer;
//! - elementwise operations, activations and pooling pass units through; adding two tensors
//!   that carry groups (a residual connection) merges them into one: they must shrink
//!   together;
//! - anything else that reads a group (a softmax or a reduction over the units, a transpose, a
//!   grouped convolution, an operation this module does not know) leaves that group out, with
//!   the reason, and so does the model's output (the classes are not pruned).

use std::collections::HashMap;

use burn::module::Module;
use burn::tensor::Tensor;
use ember_tensor::graph::burn_ir::{
    ActivationOperationIr, BaseOperationIr, FloatOperationIr, ModuleOperationIr,
    NumericOperationIr, OperationIr, TensorId, TensorIr,
};
use ember_tensor::graph::{Captures, op_name};
use ember_tensor::{UnitGroup, UnitSlice};

use crate::Result;

/// What [`find_unit_groups`] found: the groups structured pruning can cut, and those it must
/// leave whole, with why.
#[derive(Debug, Clone, PartialEq)]
pub struct FoundGroups {
    /// The prunable groups, in the order their layers run, each named after its first
    /// producing layer (`layers.0`, `conv1`, `stem`).
    pub groups: Vec<UnitGroup>,
    /// The groups left whole: the layer's name and the reason.
    pub skipped: Vec<(String, String)>,
}

/// Where a tensor's units lie: the group, the axis, and the elements per unit along it.
#[derive(Debug, Clone, Copy)]
struct Carry {
    group: usize,
    axis: usize,
    block: usize,
}

#[derive(Debug)]
struct Group {
    name: String,
    units: usize,
    producers: Vec<UnitSlice>,
    consumers: Vec<UnitSlice>,
    blocked: Option<String>,
}

/// Capture `forward` of `model` for inputs of `shape` (the first axis the batch) and find its
/// dependency groups; see the module's documentation.
///
/// ```
/// use burn::tensor::{Device, Tensor};
/// use ember_prune::find_unit_groups;
/// use ember_zoo::MlpConfig;
/// use ember_tensor::Classifier;
///
/// let device = Device::flex();
/// let config = MlpConfig { input: 8, hidden: vec![16, 12], classes: 3, dropout: 0.0 };
/// let model = config.init(&device)?;
/// let found = find_unit_groups(&model, [1, 1, 1, 8], |m, x: Tensor<4>| m.forward(x))?;
/// // The two hidden layers, as the model declares them; the logits are left whole.
/// assert_eq!(found.groups, config.unit_groups(""));
/// assert_eq!(found.skipped[0].0, "layers.2");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn find_unit_groups<M, F, const D: usize, const E: usize>(
    model: &M,
    shape: [usize; D],
    forward: F,
) -> Result<FoundGroups>
where
    M: Module,
    F: Fn(&M, Tensor<D>) -> Tensor<E>,
{
    let model = ember_tensor::strip(model.clone());
    let captures = Captures::new(&model, shape, forward)?;
    let mut walk = Walk {
        names: &captures.main.names,
        views: HashMap::new(),
        carried: HashMap::new(),
        groups: Vec::new(),
        parent: Vec::new(),
    };
    for op in &captures.main.ops {
        walk.operation(op);
    }
    if let Some(c) = walk.carried.get(&captures.main.output.id).copied() {
        walk.block(c.group, "it is the model's output");
    }
    Ok(walk.finish())
}

struct Walk<'a> {
    names: &'a HashMap<TensorId, String>,
    /// Parameters reshaped (a bias made `[1, out]` to broadcast): the parameter's path.
    views: HashMap<TensorId, String>,
    carried: HashMap<TensorId, Carry>,
    groups: Vec<Group>,
    /// Union-find over groups: residual connections merge them.
    parent: Vec<usize>,
}

impl Walk<'_> {
    fn param(&self, t: &TensorIr) -> Option<String> {
        self.names
            .get(&t.id)
            .or_else(|| self.views.get(&t.id))
            .cloned()
    }

    fn root(&mut self, mut g: usize) -> usize {
        while self.parent[g] != g {
            self.parent[g] = self.parent[self.parent[g]];
            g = self.parent[g];
        }
        g
    }

    fn carry(&mut self, t: &TensorIr) -> Option<Carry> {
        let c = self.carried.get(&t.id).copied()?;
        Some(Carry {
            group: self.root(c.group),
            ..c
        })
    }

    fn block(&mut self, group: usize, reason: &str) {
        let g = self.root(group);
        if self.groups[g].blocked.is_none() {
            self.groups[g].blocked = Some(reason.to_string());
        }
    }

    /// Every group the inputs of `op` carry is left whole: `op` reads its units in a way
    /// structured pruning cannot follow.
    fn block_inputs(&mut self, op: &OperationIr, why: &str) {
        let inputs: Vec<TensorIr> = op.inputs().cloned().collect();
        for t in inputs {
            if let Some(c) = self.carry(&t) {
                self.block(c.group, &format!("`{}` {why}", op_name(op)));
            }
        }
    }

    fn start(&mut self, weight: &str, units: usize, producers: Vec<UnitSlice>) -> usize {
        let name = weight.strip_suffix(".weight").unwrap_or(weight).to_string();
        self.groups.push(Group {
            name,
            units,
            producers,
            consumers: Vec::new(),
            blocked: None,
        });
        self.parent.push(self.groups.len() - 1);
        self.groups.len() - 1
    }

    fn pass(&mut self, input: &TensorIr, out: &TensorIr) {
        if let Some(c) = self.carried.get(&input.id).copied() {
            self.carried.insert(out.id, c);
        }
    }

    /// A fully connected layer `x · weight (+ bias)`, `weight` being `[in, out]`.
    fn fully_connected(
        &mut self,
        x: &TensorIr,
        weight: &TensorIr,
        bias: Option<&TensorIr>,
        out: &TensorIr,
    ) {
        let Some(path) = self.param(weight) else {
            return;
        };
        let last = x.shape.len().saturating_sub(1);
        if let Some(c) = self.carry(x) {
            if c.axis == last {
                let slice = UnitSlice::new(path.clone(), 0).with_block(c.block);
                self.groups[c.group].consumers.push(slice);
            } else {
                self.block(c.group, "a matrix product reads it along another axis");
            }
        }
        let units = weight.shape.get(1).copied().unwrap_or(0);
        let mut producers = vec![UnitSlice::new(path.clone(), 1)];
        if let Some(bias) = bias.and_then(|b| self.param(b)) {
            producers.push(UnitSlice::new(bias, 0));
        }
        let g = self.start(&path, units, producers);
        self.carried.insert(
            out.id,
            Carry {
                group: g,
                axis: out.shape.len().saturating_sub(1),
                block: 1,
            },
        );
    }

    /// An elementwise operation of two tensors: a parameter of one value per unit is a
    /// producer of the group (a bias), two groups meeting are merged (a residual addition).
    fn elementwise(&mut self, op: &OperationIr, lhs: &TensorIr, rhs: &TensorIr, out: &TensorIr) {
        match (self.carry(lhs), self.carry(rhs)) {
            (Some(a), Some(b)) => {
                if a.group != b.group {
                    let same = a.axis == b.axis
                        && a.block == b.block
                        && self.groups[a.group].units == self.groups[b.group].units;
                    if !same {
                        self.block(a.group, &format!("`{}` meets another group", op_name(op)));
                        self.block(b.group, &format!("`{}` meets another group", op_name(op)));
                    } else {
                        // The earlier group absorbs the later one.
                        let (keep, gone) = (a.group.min(b.group), a.group.max(b.group));
                        let moved = std::mem::take(&mut self.groups[gone].producers);
                        self.groups[keep].producers.extend(moved);
                        let moved = std::mem::take(&mut self.groups[gone].consumers);
                        self.groups[keep].consumers.extend(moved);
                        if let Some(reason) = self.groups[gone].blocked.take() {
                            self.block(keep, &reason);
                        }
                        self.parent[gone] = keep;
                    }
                }
                let group = self.root(a.group);
                self.carried.insert(out.id, Carry { group, ..a });
            }
            (Some(c), None) | (None, Some(c)) => {
                let other = if self.carried.contains_key(&lhs.id) {
                    rhs
                } else {
                    lhs
                };
                let numel: usize = other.shape.iter().product();
                if let Some(path) = self.param(other) {
                    if numel == self.groups[c.group].units && c.block == 1 {
                        let slice = UnitSlice::new(path, 0);
                        if !self.groups[c.group].producers.contains(&slice) {
                            self.groups[c.group].producers.push(slice);
                        }
                    } else if numel != 1 {
                        self.block(
                            c.group,
                            &format!("`{}` with a parameter of another shape", op_name(op)),
                        );
                    }
                }
                self.carried.insert(out.id, c);
            }
            (None, None) => {}
        }
    }

    fn operation(&mut self, op: &OperationIr) {
        use ActivationOperationIr as Act;
        use BaseOperationIr as Base;
        use FloatOperationIr as F;
        use ModuleOperationIr as Mod;
        use NumericOperationIr as Num;
        match op {
            OperationIr::Init(_) | OperationIr::Drop(_) => {}
            OperationIr::Float(_, F::Matmul(m)) => {
                if self.param(&m.rhs).is_some() {
                    self.fully_connected(&m.lhs, &m.rhs, None, &m.out);
                } else {
                    self.block_inputs(op, "multiplies two activations");
                }
            }
            OperationIr::Module(Mod::Linear(l)) => {
                self.fully_connected(&l.x, &l.weight, l.bias.as_ref(), &l.out);
            }
            OperationIr::Module(Mod::Conv2d(c)) => {
                let Some(path) = self.param(&c.weight) else {
                    return self.block_inputs(op, "convolves with a computed kernel");
                };
                let grouped = c.options.groups != 1;
                match self.carry(&c.x) {
                    Some(x) if x.axis == 1 && x.block == 1 && !grouped => {
                        self.groups[x.group]
                            .consumers
                            .push(UnitSlice::new(path.clone(), 1));
                    }
                    Some(x) => self.block(
                        x.group,
                        if grouped {
                            "a grouped convolution reads it"
                        } else {
                            "a convolution reads it along another axis"
                        },
                    ),
                    None => {}
                }
                let mut producers = vec![UnitSlice::new(path.clone(), 0)];
                if let Some(bias) = c.bias.as_ref().and_then(|b| self.param(b)) {
                    producers.push(UnitSlice::new(bias, 0));
                }
                let g = self.start(&path, c.weight.shape[0], producers);
                if grouped {
                    self.block(g, "a grouped convolution computes it");
                }
                self.carried.insert(
                    c.out.id,
                    Carry {
                        group: g,
                        axis: 1,
                        block: 1,
                    },
                );
            }
            OperationIr::Module(Mod::BatchNorm(n)) => {
                if let Some(c) = self.carry(&n.x) {
                    if c.axis == 1 && c.block == 1 {
                        for t in [&n.gamma, &n.beta, &n.mean, &n.variance] {
                            if let Some(path) = self.param(t) {
                                self.groups[c.group].producers.push(UnitSlice::new(path, 0));
                            }
                        }
                    } else {
                        self.block(c.group, "a batch norm reads it along another axis");
                    }
                }
                self.pass(&n.x, &n.out);
            }
            OperationIr::Module(Mod::MaxPool2d(p)) => self.pass(&p.x, &p.out),
            OperationIr::Module(Mod::AvgPool2d(p)) => self.pass(&p.x, &p.out),
            OperationIr::Module(Mod::AdaptiveAvgPool2d(p)) => self.pass(&p.x, &p.out),
            OperationIr::BaseFloat(Base::Reshape(s)) => {
                if let Some(path) = self.param(&s.input) {
                    self.views.insert(s.out.id, path);
                    return;
                }
                let Some(c) = self.carry(&s.input) else {
                    return;
                };
                let (from, to) = (s.input.shape.to_vec(), s.out.shape.to_vec());
                let a = c.axis;
                if to.len() > a && from[..=a] == to[..=a] {
                    // The unit axis and those before it as they were ([n, c, 1, 1] -> [n, c]).
                    self.carried.insert(s.out.id, c);
                } else if to.len() == a + 1
                    && from[..a] == to[..a]
                    && to[a] == from[a..].iter().product::<usize>()
                {
                    // Flattened from the unit axis on: each unit a block of what followed it.
                    let block = c.block * from[a + 1..].iter().product::<usize>();
                    self.carried.insert(s.out.id, Carry { block, ..c });
                } else {
                    self.block(c.group, "a reshape splits its units");
                }
            }
            OperationIr::NumericFloat(_, n) => match n {
                Num::Add(b) | Num::Sub(b) | Num::Mul(b) | Num::Div(b) => {
                    self.elementwise(op, &b.lhs, &b.rhs, &b.out);
                }
                Num::AddScalar(s)
                | Num::SubScalar(s)
                | Num::MulScalar(s)
                | Num::DivScalar(s)
                | Num::ClampMin(s)
                | Num::ClampMax(s) => self.pass(&s.lhs, &s.out),
                Num::Abs(u) => self.pass(&u.input, &u.out),
                Num::Clamp(c) => self.pass(&c.tensor, &c.out),
                Num::MeanDim(r) | Num::SumDim(r) | Num::MaxDim(r) | Num::MinDim(r) => {
                    match self.carry(&r.input) {
                        Some(c) if c.axis == r.axis => {
                            self.block(
                                c.group,
                                &format!("`{}` reduces over its units", op_name(op)),
                            );
                        }
                        Some(_) => self.pass(&r.input, &r.out),
                        None => {}
                    }
                }
                _ => self.block_inputs(op, "is not followed by structured pruning"),
            },
            OperationIr::Float(
                _,
                F::Exp(u) | F::Log(u) | F::Sqrt(u) | F::Tanh(u) | F::Erf(u) | F::Recip(u),
            ) => self.pass(&u.input, &u.out),
            OperationIr::Activation(a) => match a {
                Act::Relu(u) | Act::Gelu(u) | Act::Sigmoid(u) => self.pass(&u.input, &u.out),
                Act::LeakyRelu(s) => self.pass(&s.lhs, &s.out),
                Act::Softmax(d) | Act::LogSoftmax(d) => match self.carry(&d.input) {
                    Some(c) if c.axis == d.axis => {
                        self.block(
                            c.group,
                            &format!("`{}` normalizes over its units", op_name(op)),
                        );
                    }
                    Some(_) => self.pass(&d.input, &d.out),
                    None => {}
                },
                _ => self.block_inputs(op, "is not followed by structured pruning"),
            },
            _ => self.block_inputs(op, "is not followed by structured pruning"),
        }
    }

    fn finish(mut self) -> FoundGroups {
        let mut groups = Vec::new();
        let mut skipped = Vec::new();
        let roots: Vec<usize> = (0..self.groups.len())
            .filter(|&g| self.parent[g] == g)
            .collect();
        for g in roots {
            let group = &mut self.groups[g];
            if group.consumers.is_empty() && group.blocked.is_none() {
                group.blocked = Some("no layer reads its units".into());
            }
            match group.blocked.take() {
                Some(reason) => skipped.push((group.name.clone(), reason)),
                None => groups.push(UnitGroup {
                    name: group.name.clone(),
                    units: group.units,
                    producers: std::mem::take(&mut group.producers),
                    consumers: std::mem::take(&mut group.consumers),
                }),
            }
        }
        FoundGroups { groups, skipped }
    }
}
