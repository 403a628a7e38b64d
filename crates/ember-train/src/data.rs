//! Any [`LabeledData`] as burn's data loaders: the dataset hands out sample indices and the
//! batcher asks the data for those samples on the loader's device, so nothing is copied up
//! front and augmentation drawn per batch stays per batch.

use std::sync::Arc;

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataloader::{DataLoader, DataLoaderBuilder};
use burn::data::dataset::{Dataset, DatasetError};
use burn::tensor::{Device, Int, Tensor};
use ember_tensor::{Input, LabeledData};

/// A batch of labelled inputs (images unless `I` says otherwise), as burn-train's steps
/// receive it.
#[derive(Debug, Clone)]
pub struct ClassBatch<I: Input = Tensor<4>> {
    /// The inputs.
    pub inputs: I,
    /// Their class labels.
    pub labels: Tensor<1, Int>,
    /// Their indices in the dataset.
    pub indices: Vec<usize>,
}

/// The indices `0..len` of a labelled dataset, as a burn [`Dataset`].
#[derive(Debug, Clone, Copy)]
pub struct Indices(usize);

impl Dataset<usize> for Indices {
    fn get(&self, index: usize) -> Result<usize, DatasetError> {
        if index < self.0 {
            Ok(index)
        } else {
            Err(DatasetError::new(std::io::Error::other(format!(
                "sample {index} of a dataset of {}",
                self.0
            ))))
        }
    }

    fn len(&self) -> usize {
        self.0
    }
}

/// Builds [`ClassBatch`]es from a shared [`LabeledData`].
pub struct LabeledBatcher<D: ?Sized> {
    data: Arc<D>,
}

impl<I: Input, D: LabeledData<I> + Send + Sync + ?Sized> Batcher<usize, ClassBatch<I>>
    for LabeledBatcher<D>
{
    fn batch(&self, indices: Vec<usize>, device: &Device) -> ClassBatch<I> {
        let (inputs, labels) = self.data.batch(&indices, device);
        ClassBatch {
            inputs,
            labels,
            indices,
        }
    }
}

/// A shared data loader of labelled batches.
pub type Loader<I = Tensor<4>> = Arc<dyn DataLoader<ClassBatch<I>>>;

/// One data loader over `data`: shuffled from `seed` when `shuffle` is set, in order otherwise.
pub fn loader<I: Input, D: LabeledData<I> + Send + Sync + ?Sized + 'static>(
    data: Arc<D>,
    batch_size: usize,
    shuffle: Option<u64>,
) -> Loader<I> {
    let len = data.len();
    let builder = DataLoaderBuilder::new(LabeledBatcher { data }).batch_size(batch_size.max(1));
    match shuffle {
        Some(seed) => builder.shuffle(seed).build(Indices(len)),
        None => builder.build(Indices(len)),
    }
}

/// The training loader (shuffled from `seed`, a different order every epoch) and the
/// validation loader (in order) burn-train's `SupervisedTraining::new` takes.
pub fn loaders<I, T, V>(
    train: Arc<T>,
    valid: Arc<V>,
    batch_size: usize,
    seed: u64,
) -> (Loader<I>, Loader<I>)
where
    I: Input,
    T: LabeledData<I> + Send + Sync + ?Sized + 'static,
    V: LabeledData<I> + Send + Sync + ?Sized + 'static,
{
    (
        loader(train, batch_size, Some(seed)),
        loader(valid, batch_size, None),
    )
}
