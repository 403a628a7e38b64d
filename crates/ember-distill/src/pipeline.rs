//! Pre-trained distillation (Turc et al. 2019, "Well-Read Students Learn Better"): the compact
//! model is first pre-trained on its own, then distilled from a task teacher, then fine-tuned
//! on the labels. Each stage is one value in a list run by the same trainer, so any stage can
//! be dropped, repeated or swapped.

use burn::tensor::{Device, Tensor};
use ember_tensor::{Classifier, Input, LabeledData, TrainConfig, TrainReport, train};

use crate::Result;
use crate::loss::SoftTargetConfig;
use crate::modes::{TeacherOutputs, distill};

/// One stage of a pipeline.
pub enum Stage<'a, T, I: Input = Tensor<4>> {
    /// Plain training on labels: pre-training (on a large generic set) or fine-tuning (on the
    /// task's labelled set).
    Train {
        /// A name for the report (`pretrain`, `finetune`).
        name: &'a str,
        /// What to train on.
        data: &'a dyn LabeledData<I>,
        /// How.
        train: TrainConfig,
    },
    /// Distillation from a frozen teacher.
    Distill {
        /// A name for the report.
        name: &'a str,
        /// The task teacher.
        teacher: &'a T,
        /// The transfer set.
        data: &'a dyn LabeledData<I>,
        /// How.
        train: TrainConfig,
        /// The soft-target loss.
        soft_targets: SoftTargetConfig,
        /// Where the teacher's logits come from.
        teacher_outputs: TeacherOutputs,
    },
}

/// What one stage did.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StageReport {
    /// The stage's name.
    pub name: String,
    /// Its training report.
    pub train: TrainReport,
}

/// Run `stages` in order on `student`.
pub fn run_pipeline<I: Input, S: Classifier<I>, T: Classifier<I>>(
    student: S,
    stages: &[Stage<'_, T, I>],
    device: &Device,
) -> Result<(S, Vec<StageReport>)> {
    let mut student = student;
    let mut reports = Vec::with_capacity(stages.len());
    for stage in stages {
        let (name, report);
        (student, name, report) = match stage {
            Stage::Train {
                name,
                data,
                train: config,
            } => {
                let (s, r) = train(student, *data, config, device)?;
                (s, *name, r)
            }
            Stage::Distill {
                name,
                teacher,
                data,
                train: config,
                soft_targets,
                teacher_outputs,
            } => {
                let (s, r) = distill(
                    student,
                    *teacher,
                    *data,
                    config,
                    soft_targets,
                    *teacher_outputs,
                    device,
                )?;
                (s, *name, r.train)
            }
        };
        reports.push(StageReport {
            name: name.to_string(),
            train: report,
        });
    }
    Ok((student, reports))
}
