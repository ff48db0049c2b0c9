using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using NegDistill.Checkpoints;
using NegDistill.Json;
using NegDistill.Model;
using NegDistill.Runtime;

namespace NegDistill.Train;

/// <summary>Optimisation settings shared by every stage (method.md: AdamW, lr 3e-4, effective batch 128).</summary>
public sealed record TrainConfig
{
    public int Steps { get; init; } = 1000;
    /// <summary>Sequences per forward/backward (the memory knob).</summary>
    public int MicroBatch { get; init; } = 4;
    /// <summary>Sequences per optimiser step; must be a multiple of MicroBatch (gradient accumulation).</summary>
    public int EffectiveBatch { get; init; } = 128;
    public float LearningRate { get; init; } = 3e-4f;
    public float WeightDecay { get; init; }
    public float Beta1 { get; init; } = 0.9f;
    public float Beta2 { get; init; } = 0.999f;
    public float Eps { get; init; } = 1e-8f;
    /// <summary>Linear warm-up steps, then cosine decay to MinLrRatio·lr at the last step.</summary>
    public int WarmupSteps { get; init; }
    public float MinLrRatio { get; init; } = 0.1f;
    /// <summary>Global gradient-norm clip; 0 turns clipping off.</summary>
    public float ClipNorm { get; init; } = 1f;
    /// <summary>Checkpoint every N optimiser steps (0: only at the end and on interruption).</summary>
    public int CheckpointEvery { get; init; }
    /// <summary>Held-out evaluation every N steps (0: only at the end) when an eval source is given.</summary>
    public int EvalEvery { get; init; }
    public ulong Seed { get; init; } = 1;

    public int Accumulation => EffectiveBatch / MicroBatch;

    public void Validate()
    {
        if (Steps <= 0) throw new ArgumentException($"train.steps must be positive (got {Steps})");
        if (MicroBatch <= 0) throw new ArgumentException($"train.micro_batch must be positive (got {MicroBatch})");
        if (EffectiveBatch < MicroBatch || EffectiveBatch % MicroBatch != 0)
            throw new ArgumentException($"train.effective_batch ({EffectiveBatch}) must be a positive multiple of train.micro_batch ({MicroBatch})");
        if (!(LearningRate > 0)) throw new ArgumentException($"train.lr must be positive (got {LearningRate})");
        if (WarmupSteps < 0 || WarmupSteps > Steps) throw new ArgumentException($"train.warmup_steps must be in [0, steps] (got {WarmupSteps})");
    }

    /// <summary>Learning rate at optimiser step s (1-based).</summary>
    public float LrAt(int s)
    {
        if (WarmupSteps > 0 && s <= WarmupSteps) return LearningRate * s / WarmupSteps;
        int decay = Steps - WarmupSteps;
        if (decay <= 0) return LearningRate;
        double progress = (double)(s - WarmupSteps) / decay;
        double cos = 0.5 * (1 + Math.Cos(Math.PI * Math.Min(1, progress)));
        return (float)(LearningRate * (MinLrRatio + (1 - MinLrRatio) * cos));
    }
}

/// <summary>Micro-batches addressed by a global index, so that a resumed run sees exactly the batches
/// the uninterrupted run would have seen. Indices past <see cref="Count"/> continue into later epochs
/// (the source decides their order, e.g. a reshuffle per epoch).</summary>
public interface IBatchSource
{
    ModelBatch Get(long index);
    /// <summary>Number of micro-batches in one epoch; evaluation reads indices [0, Count).</summary>
    long Count { get; }
}

public sealed record StepMetrics(int Step, int TotalSteps, double Loss, double GradNorm, float Lr, double TokensPerSecond, double? EvalLoss, TimeSpan Elapsed);

/// <summary>One line of metrics.jsonl.</summary>
public sealed record MetricsRecord(int Step, double Loss, double GradNorm, float Lr, double TokensPerS, double? EvalLoss, double ElapsedS);


/// <summary>
/// The training loop every stage and baseline shares: gradient accumulation to the effective batch,
/// AdamW with warm-up and cosine decay, global gradient-norm clipping, held-out evaluation,
/// atomic checkpoints (trainable weights + optimiser moments + step in one safetensors file), exact
/// resume, NaN/Inf detection, and a JSONL metrics log. A stage is a loss head and a choice of
/// trainable parameters, nothing else.
/// </summary>
public sealed class Trainer
{
    public const string StateFile = "train_state.safetensors";
    public const string MetricsFile = "metrics.jsonl";

    readonly LlamaModel _model;
    readonly Func<ModelBatch, bool, bool, double> _objective;   // (batch, backward, training) → loss
    readonly TrainConfig _cfg;
    readonly IReadOnlyList<Param> _params;
    readonly string _dir;

    /// <summary>A trainer for a token-level loss on the LM head's logits.</summary>
    public Trainer(LlamaModel model, ILossHead head, TrainConfig cfg, string outDir, IEnumerable<Param>? trainable = null)
        : this(model, (b, bw, tr) => model.Step(b, head, bw, tr), cfg, outDir, trainable) { }

    /// <summary>A trainer for a sequence-level loss on the final hidden states (its head's parameters
    /// train along with the model's trainable ones).</summary>
    public Trainer(LlamaModel model, IHiddenHead head, TrainConfig cfg, string outDir)
        : this(model, (b, bw, tr) => model.StepHidden(b, head, bw, tr), cfg, outDir, model.TrainableParameters.Concat(head.Parameters)) { }

    /// <summary>A trainer for any objective: (batch, backward, training) → loss, accumulating into the
    /// gradients of <paramref name="trainable"/> (e.g. NCE, whose teachers run before the student).</summary>
    public Trainer(LlamaModel model, Func<ModelBatch, bool, bool, double> objective, TrainConfig cfg, string outDir, IEnumerable<Param>? trainable)
    {
        cfg.Validate();
        (_model, _objective, _cfg, _dir) = (model, objective, cfg, outDir);
        _params = (trainable ?? model.TrainableParameters).ToList();
        if (_params.Count == 0) throw new ArgumentException("nothing to train: no trainable parameters");
        foreach (var p in _params) if (!p.Trainable) throw new ArgumentException($"parameter {p.Name} is frozen");
        Directory.CreateDirectory(outDir);
    }

    /// <summary>Called after every optimiser step (progress bars, logs).</summary>
    public event Action<StepMetrics>? StepDone;
    /// <summary>Called after every checkpoint with the step it holds.</summary>
    public event Action<int>? CheckpointWritten;

    public int Step { get; private set; }
    public List<StepMetrics> History { get; } = new();

    public string StatePath => Path.Combine(_dir, StateFile);

    /// <summary>Trains to cfg.Steps, resuming from the checkpoint in the output folder if there is one.
    /// Returns true when finished, false when cancelled (after checkpointing).</summary>
    public bool Run(IBatchSource train, IBatchSource? eval = null, CancellationToken cancel = default)
    {
        AtomicFile.SweepStale(_dir);            // a checkpoint write the process was killed in
        if (File.Exists(StatePath)) Load();
        KeepMetricsUpTo(Step);
        var ops = _model.Ops;
        var sw = Stopwatch.StartNew();
        using var log = new StreamWriter(MetricsPath, append: true);
        while (Step < _cfg.Steps)
        {
            if (cancel.IsCancellationRequested) { Save(); return false; }
            int s = Step + 1;
            var t0 = sw.Elapsed;
            foreach (var p in _params) ops.Fill(p.Grad!, 0f);
            double loss = 0; long tokens = 0;
            for (int j = 0; j < _cfg.Accumulation; j++)
            {
                long index = (long)Step * _cfg.Accumulation + j;
                var batch = train.Get(index);
                _model.Pass.StepSeed = CounterRng.Derive(_cfg.Seed, (ulong)s, (ulong)j);
                double l = _objective(batch, true, true);
                if (!double.IsFinite(l))
                    throw Stop($"step {s}, micro-batch {j} (data index {index}): the loss is {l}; first non-finite tensor: "
                        + (_model.FirstNonFinite() ?? "none among the parameters and activations (the loss head's logits or terms overflowed)"));
                loss += l / _cfg.Accumulation;
                tokens += batch.Mask.Count(m => m != 0);
            }
            double sq = 0;
            foreach (var p in _params)
            {
                if (_cfg.Accumulation > 1) ops.Scale(p.Grad!, 1f / _cfg.Accumulation, p.Length);
                double ps = ops.SumSquares(p.Grad!, p.Length);
                if (!double.IsFinite(ps) && ops.HasNonFinite(p.Grad!, p.Length))
                {
                    long first = (long)Step * _cfg.Accumulation;
                    throw Stop($"step {s}, micro-batches 0–{_cfg.Accumulation - 1} (data indices {first}–{first + _cfg.Accumulation - 1}): "
                        + $"the gradient of {p.Name} (layer {LayerOf(p.Name)}) contains NaN or Inf (the loss was finite)");
                }
                sq += ps;
            }
            double norm = Math.Sqrt(sq);
            if (_cfg.ClipNorm > 0 && norm > _cfg.ClipNorm)
                foreach (var p in _params) ops.Scale(p.Grad!, (float)(_cfg.ClipNorm / norm), p.Length);
            float lr = _cfg.LrAt(s);
            foreach (var p in _params)
                ops.AdamW(p.W, p.Grad!, p.M!, p.V!, p.Length, lr, _cfg.Beta1, _cfg.Beta2, _cfg.Eps, _cfg.WeightDecay, s);
            Step = s;
            double? evalLoss = null;
            if (eval != null && ((_cfg.EvalEvery > 0 && s % _cfg.EvalEvery == 0) || s == _cfg.Steps)) evalLoss = Evaluate(eval);
            var m = new StepMetrics(s, _cfg.Steps, loss, norm, lr, tokens / Math.Max(1e-9, (sw.Elapsed - t0).TotalSeconds), evalLoss, sw.Elapsed);
            History.Add(m);
            log.WriteLine(JsonSerializer.Serialize(new MetricsRecord(s, loss, norm, lr, m.TokensPerSecond, evalLoss, sw.Elapsed.TotalSeconds), CoreJsonLines.Default.MetricsRecord));
            log.Flush();
            StepDone?.Invoke(m);
            if (_cfg.CheckpointEvery > 0 && s % _cfg.CheckpointEvery == 0 && s < _cfg.Steps) Save();
        }
        Save();
        return true;
    }

    public string MetricsPath => Path.Combine(_dir, MetricsFile);

    /// <summary>A run resumed from step <paramref name="step"/> logs the steps after it again: the lines it
    /// logged past its checkpoint before it was stopped are removed first, so each step appears once.</summary>
    void KeepMetricsUpTo(int step)
    {
        if (!File.Exists(MetricsPath)) return;
        var lines = File.ReadAllLines(MetricsPath);
        var keep = lines.Where(l => TryStep(l) is { } s && s <= step).ToArray();
        if (keep.Length != lines.Length) AtomicFile.WriteAllText(MetricsPath, keep.Length == 0 ? "" : string.Join("\n", keep) + "\n");
    }

    static int? TryStep(string line)
    {
        try { return JsonSerializer.Deserialize(line, CoreJsonLines.Default.MetricsRecord)?.Step; }
        catch (JsonException) { return null; }   // a line cut off by a kill
    }

    /// <summary>The metrics of a stage's folder, one record per step (the last one when a step repeats).</summary>
    public static IReadOnlyList<MetricsRecord> ReadMetrics(string path)
    {
        var bySteps = new SortedDictionary<int, MetricsRecord>();
        foreach (var line in File.ReadLines(path))
        {
            try { if (JsonSerializer.Deserialize(line, CoreJsonLines.Default.MetricsRecord) is { } r) bySteps[r.Step] = r; }
            catch (JsonException e) { throw new InvalidDataException($"{path}: {e.Message}", e); }
        }
        return bySteps.Values.ToList();
    }

    /// <summary>The training state is still that of the last completed step (nothing was applied): it is
    /// checkpointed as the last good step when every trainable parameter is finite.</summary>
    NonFiniteException Stop(string what)
    {
        string kept;
        if (Step == 0) kept = "nothing was trained yet, so no checkpoint was written";
        else if (_params.Any(p => _model.Ops.HasNonFinite(p.W, p.Length))) kept = $"the checkpoint in {StatePath} is left as it was (the weights themselves are non-finite)";
        else { Save(); kept = $"{StatePath} holds step {Step}, the last good one"; }
        return new NonFiniteException($"{what}; {kept}");
    }

    /// <summary>Mean loss over every batch of the source, dropout off, no gradients.</summary>
    public double Evaluate(IBatchSource eval)
    {
        double sum = 0;
        for (long i = 0; i < eval.Count; i++) sum += _objective(eval.Get(i), false, false);
        return sum / Math.Max(1, eval.Count);
    }

    static string LayerOf(string name)
    {
        int i = name.IndexOf("layers.", StringComparison.Ordinal);
        if (i < 0) return "-";
        int j = name.IndexOf('.', i + 7);
        return j < 0 ? name[(i + 7)..] : name[(i + 7)..j];
    }

    /// <summary>The checkpoint's three tensors of a trainable parameter: its weights, AdamW's m and v.</summary>
    static (string Prefix, Tensor T)[] StateTensors(Param p) => [("param.", p.W), ("optim.m.", p.M!), ("optim.v.", p.V!)];

    /// <summary>Writes trainable weights, AdamW moments and the step as one safetensors file, atomically.</summary>
    public void Save()
    {
        var ops = _model.Ops;
        var tensors = new List<StoredTensor>();
        foreach (var p in _params)
        {
            var shape = p.Shape.Select(d => (long)d).ToArray();
            foreach (var (prefix, t) in StateTensors(p))
            {
                var buf = new float[p.Length];
                ops.Download(t, buf);
                tensors.Add(StoredTensor.FromFloat32(prefix + p.Name, shape, buf));
            }
        }
        var meta = new Dictionary<string, string>
        {
            ["format"] = "negdistill-train-state", ["step"] = Step.ToString(CultureInfo.InvariantCulture),
            ["seed"] = _cfg.Seed.ToString(CultureInfo.InvariantCulture), ["steps"] = _cfg.Steps.ToString(CultureInfo.InvariantCulture),
        };
        SafeTensors.Write(StatePath, tensors, meta);
        CheckpointWritten?.Invoke(Step);
    }

    void Load()
    {
        using var f = SafeTensors.Open(StatePath);
        if (!f.Metadata.TryGetValue("step", out var st) || !int.TryParse(st, CultureInfo.InvariantCulture, out int step))
            throw new CheckpointFormatException(CheckpointErrorKind.InvalidTrainingState, StatePath, null, "metadata has no integer 'step'");
        var ops = _model.Ops;
        foreach (var p in _params)
            foreach (var (prefix, t) in StateTensors(p))
            {
                string name = prefix + p.Name;
                if (!f.Contains(name))
                    throw new CheckpointFormatException(CheckpointErrorKind.MissingTensor, StatePath, name, "the checkpoint was written for a different set of trainable parameters");
                var info = f.Info(name);
                if (info.ElementCount != p.Length)
                    throw new CheckpointFormatException(CheckpointErrorKind.ShapeMismatch, StatePath, name, $"has {info.ElementCount} elements, the model's {p.Name} has {p.Length}");
                ops.Upload(t, f.ReadFloat32(name));
            }
        Step = step;
    }
}
