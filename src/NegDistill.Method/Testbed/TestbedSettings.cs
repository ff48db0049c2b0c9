using NegDistill.Method.Settings;
using NegDistill.Model;

namespace NegDistill.Method.Testbed;

/// <summary>The embedded default's sizes: the world, the student, how long each part trains, how many
/// seeds. The defaults are the testbed the README reports; <see cref="Quick"/> is the CI run that
/// exercises every step in seconds.</summary>
public sealed record TestbedSettings
{
    public string Out { get; init; } = "runs/demo";
    /// <summary>The world's seed (problems, teacher, test set) and the base's; run seeds are Seed, Seed + 1, …</summary>
    public ulong Seed { get; init; } = 1;
    /// <summary>Replicates: each seed pretrains its own base and trains every stage from it.</summary>
    public int Seeds { get; init; } = 3;
    /// <summary>One base for every seed (pretrained from <see cref="Seed"/>): faster, but the sd across seeds then
    /// leaves out the variation between pretraining runs.</summary>
    public bool SharedBase { get; init; }
    public bool Quick { get; init; }
    public int TrainProblems { get; init; } = 400;
    public int TestProblems { get; init; } = 500;
    public int RankProblems { get; init; } = 100;
    public int PretrainSteps { get; init; } = 450;
    public float PretrainLr { get; init; } = 4e-3f;
    public int StageSteps { get; init; } = 60;
    public float StageLr { get; init; } = 3e-3f;
    /// <summary>The ranking model's steps: a verifier of slips needs longer than a stage.</summary>
    public int RankSteps => 4 * StageSteps;
    public int PretrainBatch { get; init; } = 32;
    /// <summary>The longest chain in the pretraining corpus: the base knows short problems, the teacher's data brings the long ones.</summary>
    public int PretrainMaxLevel { get; init; } = 3;
    /// <summary>Sequences per step of every stage (one micro-batch, no accumulation).</summary>
    public int MicroBatch { get; init; } = 16;
    /// <summary>Which tokens the stages' cross-entropy covers (the authors': the question too).</summary>
    public Data.LossMaskMode StageLoss { get; init; } = Data.LossMaskMode.RationaleOnly;
    /// <summary>Candidates per test question for SC / WS / ASC.</summary>
    public int Samples { get; init; } = 16;
    /// <summary>Test problems (the first ones, balanced over the levels) whose candidates are sampled and voted.</summary>
    public int VoteProblems { get; init; } = 200;
    public int MaxNewTokens { get; init; } = 72;
    public int Cutoff { get; init; } = 160;
    public int Dim { get; init; } = 128;
    public int Layers { get; init; } = 4;

    public static class Keys
    {
        public static readonly SettingInfo Out = new("--out", null, "output folder");
        public static readonly SettingInfo Seed = new("--seed", null, "seed of the world and the base; the run seeds are this, this + 1, …");
        public static readonly SettingInfo Seeds = new("--seeds", null, "replicates (each pretrains its own base and trains every stage from it); the tables give mean ± sd across them");
        public static readonly SettingInfo SharedBase = new("--shared-base", null, "pretrain one base for every seed (faster; the sd then leaves out base-to-base variation)");
        public static readonly SettingInfo Quick = new("--quick", null, "a shortened run (under a minute) that exercises every step; for CI");
        public static readonly SettingInfo TestProblems = new("--test-problems", null, "held-out test problems (balanced over the 5 levels)");
        public static readonly SettingInfo PretrainSteps = new("--pretrain-steps", null, "optimiser steps of the base's pretraining");
        public static readonly SettingInfo StageSteps = new("--stage-steps", null, "optimiser steps of every stage and baseline");
        public static readonly SettingInfo MicroBatch = new("--micro-batch", null, "sequences per optimiser step of every stage and baseline");
    }

    /// <summary>The sizes a run uses: these, or the quick ones.</summary>
    public TestbedSettings Resolve() => Quick
        ? this with { Seeds = Math.Min(Seeds, 2), TrainProblems = 40, TestProblems = 20, RankProblems = 6, PretrainSteps = 16, PretrainBatch = 8, StageSteps = 4, MicroBatch = 8, Samples = 4, VoteProblems = 10, Dim = 64, Layers = 2 }
        : this;

    public void Check(SettingsCheck c)
    {
        c.Require(!File.Exists(Out), Keys.Out, $"'{Out}' is a file; the output must be a folder");
        c.Require(Seeds >= 1 && Seeds <= 50, Keys.Seeds, $"must be between 1 and 50 (got {Seeds})");
        c.Require(TestProblems >= 5, Keys.TestProblems, $"at least 5, one per level (got {TestProblems})");
        c.Positive(PretrainSteps, Keys.PretrainSteps);
        c.Positive(StageSteps, Keys.StageSteps);
        c.Require(MicroBatch >= 2 && MicroBatch % 2 == 0, Keys.MicroBatch, $"must be even and at least 2: CL and the ranking model take (positive, negative) pairs (got {MicroBatch})");
    }

    /// <summary>The student: a LLaMA small enough to pretrain from scratch in two minutes on two cores.</summary>
    public LlamaConfig Shape(int vocab) => new() { Dim = Dim, Layers = Layers, Heads = Dim / 32, FfnDim = Dim * 8 / 3 / 16 * 16, Vocab = vocab, MaxSeq = 256 };

    /// <summary>How every stage trains: the same loop, steps and batch for all, a higher learning rate than the paper's for the short run.</summary>
    public TrainSettings Stages => new()
    {
        Steps = StageSteps, MicroBatch = MicroBatch, EffectiveBatch = MicroBatch, Lr = StageLr, WarmupSteps = Math.Max(1, StageSteps / 10),
        CheckpointEvery = Math.Max(1, StageSteps / 2), Cutoff = Cutoff, AugmentQuestions = TrainProblems, AugmentMaxNewTokens = MaxNewTokens,
    };
}
