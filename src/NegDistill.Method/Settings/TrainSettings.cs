using NegDistill.Train;

namespace NegDistill.Method.Settings;

/// <summary>
/// How every stage trains (method.md: AdamW lr 3e-4, effective batch 128, cut-off 256): `train`'s
/// options and the pipeline's <c>train</c> section. Defaults of the optimisation loop are
/// <see cref="TrainConfig"/>'s, so there is one of each.
/// </summary>
public sealed record TrainSettings
{
    static readonly TrainConfig Loop = new();

    public int Steps { get; set; } = Loop.Steps;
    public int MicroBatch { get; set; } = Loop.MicroBatch;
    public int EffectiveBatch { get; set; } = Loop.EffectiveBatch;
    public float Lr { get; set; } = Loop.LearningRate;
    /// <summary>Linear warm-up steps; a warm-up longer than the run is cut to the run.</summary>
    public int WarmupSteps { get; set; } = 20;
    public int Cutoff { get; set; } = 256;
    public int CheckpointEvery { get; set; } = 50;
    public bool Recompute { get; set; }
    /// <summary>NCE self-augmentation: training questions the NAT model answers (default: all).</summary>
    public int AugmentQuestions { get; set; } = int.MaxValue;
    public int AugmentMaxNewTokens { get; set; } = 256;

    /// <summary>The shortest cut-off: the question and a few rationale tokens must fit.</summary>
    public const int MinCutoff = 8;

    public static class Keys
    {
        public static readonly SettingInfo Steps = new("--steps", "train.steps", "optimiser steps per stage");
        public static readonly SettingInfo MicroBatch = new("--micro-batch", "train.micro_batch", "sequences per forward/backward (the memory knob)");
        public static readonly SettingInfo EffectiveBatch = new("--effective-batch", "train.effective_batch", "sequences per optimiser step, a multiple of the micro-batch (gradient accumulation)");
        public static readonly SettingInfo Lr = new("--lr", "train.lr", "AdamW learning rate (warm-up, then cosine to 10 %)");
        public static readonly SettingInfo WarmupSteps = new("--warmup", "train.warmup_steps", "linear warm-up steps before the cosine decay (cut to the run when longer)");
        public static readonly SettingInfo Cutoff = new("--cutoff", "train.cutoff", "tokens per training sequence");
        public static readonly SettingInfo CheckpointEvery = new("--checkpoint-every", "train.checkpoint_every", "optimiser steps between checkpoints");
        public static readonly SettingInfo Recompute = new("--recompute", "train.recompute", "keep one layer's activations and recompute the others in backward (less memory, one more forward)");
        public static readonly SettingInfo AugmentQuestions = new("--augment-questions", "train.augment_questions", "nce: training questions the NAT model answers for self-augmentation (default: all)");
        public static readonly SettingInfo AugmentMaxNewTokens = new("--max-new", "train.augment_max_new_tokens", "nce: token budget of a self-augmentation answer");
    }

    public void Check(SettingsCheck c)
    {
        c.Positive(Steps, Keys.Steps);
        c.Positive(MicroBatch, Keys.MicroBatch);
        c.Require(EffectiveBatch > 0 && MicroBatch > 0 && EffectiveBatch % MicroBatch == 0, Keys.EffectiveBatch,
            $"must be a positive multiple of {c.Name(Keys.MicroBatch)} ({MicroBatch}); got {EffectiveBatch}");
        c.Positive(Lr, Keys.Lr);
        c.NonNegative(WarmupSteps, Keys.WarmupSteps, "no warm-up");
        c.Require(Cutoff >= MinCutoff, Keys.Cutoff, $"must be at least {MinCutoff} tokens (got {Cutoff})");
        c.Positive(CheckpointEvery, Keys.CheckpointEvery);
        c.Positive(AugmentQuestions, Keys.AugmentQuestions);
        c.Positive(AugmentMaxNewTokens, Keys.AugmentMaxNewTokens);
    }

    /// <summary>The training loop's settings for a run with <paramref name="seed"/>.</summary>
    public TrainConfig ForTrainer(ulong seed) => new()
    {
        Steps = Steps, MicroBatch = MicroBatch, EffectiveBatch = EffectiveBatch, LearningRate = Lr,
        WarmupSteps = Math.Min(WarmupSteps, Steps), CheckpointEvery = CheckpointEvery, Seed = seed,
    };
}
