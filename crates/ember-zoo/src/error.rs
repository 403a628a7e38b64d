use std::path::PathBuf;

/// Everything that can go wrong in ember-zoo, each variant naming what was wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file that could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A dataset file that is not in the directory.
    #[error("missing dataset file {path} (looked for `{stem}` and `{stem}.gz`)")]
    MissingFile {
        /// Where it was looked for.
        path: PathBuf,
        /// The file's IDX name.
        stem: String,
    },
    /// A gzip stream that does not decompress.
    #[error("{path} is not a valid gzip stream: {reason}")]
    Gzip {
        /// The file.
        path: PathBuf,
        /// What the decoder said.
        reason: String,
    },
    /// An IDX header that is not one (wrong magic, unsupported element type).
    #[error("{path} is not an IDX file of unsigned bytes: {reason}")]
    BadHeader {
        /// The file.
        path: PathBuf,
        /// What is wrong with the header.
        reason: String,
    },
    /// An IDX file shorter than its header says.
    #[error(
        "{path} is truncated: the header promises {expected} bytes of data, the file has {got}"
    )]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Bytes promised by the header.
        expected: usize,
        /// Bytes present.
        got: usize,
    },
    /// A file whose SHA-256 is not the one recorded in `SHA256SUMS`.
    #[error("checksum mismatch for {path}: expected {expected}, got {got}")]
    ChecksumMismatch {
        /// The file.
        path: PathBuf,
        /// The recorded SHA-256.
        expected: String,
        /// The SHA-256 of the file as it is.
        got: String,
    },
    /// A `SHA256SUMS` line that cannot be parsed.
    #[error("{path}:{line}: not a `<sha256>  <file>` line")]
    BadChecksumList {
        /// The list.
        path: PathBuf,
        /// The 1-based line number.
        line: usize,
    },
    /// Images and labels of one split that do not pair up.
    #[error("{split} split has {images} images but {labels} labels")]
    CountMismatch {
        /// `train` or `test`.
        split: &'static str,
        /// Number of images.
        images: usize,
        /// Number of labels.
        labels: usize,
    },
    /// An images file whose dimensions are not `[n, rows, cols]` (or labels not `[n]`).
    #[error("{path} has dimensions {dims:?}, expected {expected}")]
    BadDims {
        /// The file.
        path: PathBuf,
        /// The dimensions in its header.
        dims: Vec<usize>,
        /// What was expected.
        expected: &'static str,
    },
    /// Train and test images of different sizes, or a split with no samples.
    #[error("inconsistent dataset: {reason}")]
    Inconsistent {
        /// What does not fit.
        reason: String,
    },
    /// A model or training config that cannot work.
    #[error("invalid config: `{field}` = {value}: {reason}")]
    InvalidConfig {
        /// The field.
        field: &'static str,
        /// Its value.
        value: String,
        /// Why it cannot be used.
        reason: &'static str,
    },
    /// A saved model that could not be written or read back.
    #[error("model file {path}: {reason}")]
    ModelFile {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A file a model folder must hold (`config.json`, `model.safetensors`, `tokenizer.json`)
    /// that is not there.
    #[error("the model folder has no {path}")]
    MissingModelFile {
        /// Where it was looked for.
        path: PathBuf,
    },
    /// An encoder config with a size no encoder can have, or a variant not implemented.
    #[error("BERT config: `{field}`: {reason}")]
    BertConfig {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A tokenizer file that does not load, or a sentence it cannot encode.
    #[error("tokenizer {path}: {reason}")]
    Tokenizer {
        /// The tokenizer's file.
        path: PathBuf,
        /// What the tokenizers crate said.
        reason: String,
    },
    /// An empty (or all-whitespace) sentence given to embed: it has no tokens to average.
    #[error("sentence {index} is empty")]
    EmptySentence {
        /// Its position in the input (0-based).
        index: usize,
    },
    /// An error from the shared tensor layer.
    #[error(transparent)]
    Tensor(#[from] ember_tensor::Error),
}

/// Result with ember-zoo's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
