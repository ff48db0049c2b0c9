using NegDistill.Data;
using NegDistill.Method.Settings;
using NegDistill.Model;
using NegDistill.Runtime;
using NegDistill.Train;

namespace NegDistill.Method;

/// <summary>What every stage of one run shares: the backend (created once), the base checkpoint,
/// tokenizer and batching, the D_pos/D_neg split (made once), the training and LoRA settings, where
/// to write, where to report, and the cancellation token.</summary>
public sealed class StageContext : IDisposable
{
    public required IBackend Ops { get; init; }
    public required BaseModel Base { get; init; }
    public required string OutDir { get; init; }
    public required Batcher Batcher { get; init; }
    /// <summary>The training loop's settings (the seed is the run's).</summary>
    public required TrainConfig Loop { get; init; }
    public required LoraConfig Lora { get; init; }
    public required IReadOnlyList<Pair> Positives { get; init; }
    public required IReadOnlyList<Pair> Negatives { get; init; }
    /// <summary>Keep one layer's activations and recompute the others in backward (<see cref="LlamaModel.Recompute"/>).</summary>
    public bool Recompute { get; init; }
    /// <summary>The teacher JSONL the split came from: NCE's self-augmentation judges against its references.</summary>
    public string? TeacherData { get; init; }
    /// <summary>NCE self-augmentation: training questions the NAT model answers, and their token budget.</summary>
    public int AugmentQuestions { get; init; } = int.MaxValue;
    public int AugmentMaxNewTokens { get; init; } = 256;
    public IReporter Report { get; init; } = new TextReporter(TextWriter.Null);
    public CancellationToken Cancel { get; init; }
    /// <summary>How the settings were typed, for the names in refusals ("lower --micro-batch").</summary>
    public SettingSource Source { get; init; } = SettingSource.CommandLine;
    /// <summary>Plan against this many bytes instead of the device's memory.</summary>
    public long? DeviceBytes { get; init; }
    /// <summary>Print and check each stage's memory plan before any stage trains.</summary>
    public bool CheckPlans { get; init; } = true;
    /// <summary>Lines the stages leave for the end of the run (self-augmentation, ranking accuracy).</summary>
    public List<string> Log { get; } = new();
    bool _ownsOps;

    public LlamaConfig Config => Base.Config;
    public ITokenizer Tokenizer => Base.Tokenizer;
    public ulong Seed => Loop.Seed;
    public string Dir(string stage) => Path.Combine(OutDir, stage);
    public string AdapterDir(string stage) => Path.Combine(OutDir, stage, "adapter");

    /// <summary>The frozen base with no adapters.</summary>
    public LlamaModel LoadBase() => Base.Load(Ops, Seed, Recompute);

    /// <summary>A run from checked settings: reads the base, splits the teacher data (printing the
    /// split's table) and creates the backend, each once for every stage.</summary>
    public static StageContext Open(RunSettings run, TrainSettings train, LoraSettings lora, DeviceSettings device, SettingSource source,
        IReporter report, CancellationToken cancel)
    {
        var @base = BaseModel.Open(run.Base!, minPositions: train.Cutoff);
        var split = new DatasetSplitter().SplitPath(run.TeacherData!);
        report.Line(SplitReport.Render(split.Summary, run.TeacherData));
        var ops = Backends.Create(device.Device);
        return new StageContext
        {
            Ops = ops, Base = @base, OutDir = run.Out, Report = report, Cancel = cancel, Source = source, DeviceBytes = device.LimitBytes,
            Batcher = new Batcher(@base.Tokenizer, new BatchingOptions { CutoffLength = train.Cutoff, BatchSize = train.MicroBatch, Seed = run.Seed }),
            Loop = train.ForTrainer(run.Seed), Lora = lora.ToConfig(), Recompute = train.Recompute,
            Positives = split.Positives, Negatives = split.Negatives, TeacherData = run.TeacherData,
            AugmentQuestions = train.AugmentQuestions, AugmentMaxNewTokens = train.AugmentMaxNewTokens,
            _ownsOps = true,
        };
    }

    public void Dispose()
    {
        if (_ownsOps) Ops.Dispose();
    }
}
