using NegDistill.Data;
using NegDistill.Model;
using NegDistill.Runtime;
using NegDistill.Train;

namespace NegDistill.Cli.Pipeline;

/// <summary>What every stage needs: the backend, the base checkpoint, tokenizer and batching, the
/// split, the training settings, where to write, and the cancellation token.</summary>
sealed class StageContext
{
    public required IBackend Ops { get; init; }
    public required LlamaConfig Config { get; init; }
    public required string BaseDir { get; init; }
    public required string OutDir { get; init; }
    public required ITokenizer Tokenizer { get; init; }
    public required Batcher Batcher { get; init; }
    public required TrainConfig Train { get; init; }
    public required LoraConfig Lora { get; init; }
    /// <summary>Precision of the frozen base weights: the checkpoint's own (<see cref="ModelIO.StorageDType"/>).</summary>
    public DType Weights { get; init; } = DType.F32;
    /// <summary>Keep one layer's activations and recompute the others in backward (<see cref="LlamaModel.Recompute"/>).</summary>
    public bool Recompute { get; init; }
    public required IReadOnlyList<Pair> Positives { get; set; }
    public required IReadOnlyList<Pair> Negatives { get; set; }
    public CancellationToken Cancel { get; init; }
    public List<string> Log { get; } = new();

    public string Dir(string stage) => Path.Combine(OutDir, stage);
    public string AdapterDir(string stage) => Path.Combine(OutDir, stage, "adapter");
}

/// <summary>Thrown when Ctrl-C stopped a stage after its checkpoint; rerunning resumes.</summary>
sealed class StageInterrupted(string stage, int step) : Exception($"{stage}: interrupted at step {step}; rerun the same command to resume");

/// <summary>
/// The paper's stages and baselines as functions over one training loop: each is a choice of
/// trainable parameters, data and loss head (method.md steps 1.1, 1.2, 2 and the baselines).
/// A stage whose adapter folder exists is complete and is skipped.
/// </summary>
static class Stages
{
    /// <summary>The frozen base with no adapters.</summary>
    public static LlamaModel LoadBase(StageContext ctx)
    {
        var m = new LlamaModel(ctx.Ops, ctx.Config, ctx.Weights, trainBase: false, seed: ctx.Train.Seed) { Recompute = ctx.Recompute };
        ModelIO.LoadBase(m, ctx.BaseDir);
        return m;
    }

    public static bool Done(StageContext ctx, string stage) => File.Exists(Path.Combine(ctx.AdapterDir(stage), "adapter_config.json"));

    static IBatchSource Source(StageContext ctx, IReadOnlyList<Pair> pairs) => new BatchSource(ctx.Batcher, ctx.Batcher.EncodeAll(pairs));

    static void Fit(StageContext ctx, string stage, Trainer tr, IBatchSource data, Action<StepMetrics>? onStep = null)
    {
        var bar = new ProgressLine(stage, ctx.Train.Steps);
        tr.StepDone += m => { bar.Update(m.Step, $"loss {m.Loss:F3}  {m.TokensPerSecond:F0} tok/s"); onStep?.Invoke(m); };
        bool done = tr.Run(data, cancel: ctx.Cancel);
        bar.Finish();
        if (!done) throw new StageInterrupted(stage, tr.Step);
    }

    /// <summary>A fresh LoRA trained with next-token cross-entropy: step 1.1 (neg, on D_neg) and the
    /// CoT KD (D_pos) and MIX (D_pos ∪ D_neg) baselines.</summary>
    public static void LoraCe(StageContext ctx, string stage, IReadOnlyList<Pair> pairs)
    {
        if (Done(ctx, stage)) { Console.WriteLine($"{stage}: complete, skipped"); return; }
        using var m = LoadBase(ctx);
        m.AddLora(ctx.Lora, seed: ctx.Train.Seed + 11);
        Fit(ctx, stage, new Trainer(m, new CrossEntropyHead(), ctx.Train, ctx.Dir(stage)), Source(ctx, pairs));
        ModelIO.SaveLora(m, ctx.AdapterDir(stage), ctx.Lora, baseModel: ctx.BaseDir);
    }

    /// <summary>UL, NT (mixed labelled batches) and CL (question-matched pairs) baselines.</summary>
    public static void LoraNegativeAware(StageContext ctx, string stage, ILossHead head, LabeledSource.Layout layout)
    {
        if (Done(ctx, stage)) { Console.WriteLine($"{stage}: complete, skipped"); return; }
        using var m = LoadBase(ctx);
        m.AddLora(ctx.Lora, seed: ctx.Train.Seed + 13);
        var src = new LabeledSource(ctx.Batcher, ctx.Positives, ctx.Negatives, layout, ctx.Train.MicroBatch, ctx.Train.Seed);
        Fit(ctx, stage, new Trainer(m, head, ctx.Train, ctx.Dir(stage)), src);
        ModelIO.SaveLora(m, ctx.AdapterDir(stage), ctx.Lora, baseModel: ctx.BaseDir);
    }

    /// <summary>Step 1.2: LoRA_neg frozen, LoRA_pos and the integration units trained on D_pos. Logs the
    /// mean and spread of α per layer (alpha.jsonl) at every step.</summary>
    public static void Nat(StageContext ctx)
    {
        const string stage = "nat";
        if (Done(ctx, stage)) { Console.WriteLine($"{stage}: complete, skipped"); return; }
        using var m = LoadBase(ctx);
        NatAdapter.AttachFromPeft(m, ctx.AdapterDir("neg"), ctx.Lora, seed: ctx.Train.Seed + 17);
        var tr = new Trainer(m, new CrossEntropyHead(), ctx.Train, ctx.Dir(stage));
        Directory.CreateDirectory(ctx.Dir(stage));
        using var alphaLog = new StreamWriter(Path.Combine(ctx.Dir(stage), "alpha.jsonl"), append: true);
        Fit(ctx, stage, tr, Source(ctx, ctx.Positives), s =>
        {
            foreach (var (l, p, mean, std) in NatAdapter.AlphaStatsByModule(m))
                alphaLog.WriteLine($"{{\"step\":{s.Step},\"layer\":{l},\"proj\":\"{p}\",\"alpha_mean\":{mean:G6},\"alpha_std\":{std:G6}}}");
            alphaLog.Flush();
        });
        AdapterFolder.SaveNat(m, ctx.AdapterDir(stage), ctx.Lora, ctx.AdapterDir("neg"), baseModel: ctx.BaseDir);
    }

    /// <summary>The trained NAT model (base + LoRA_neg + LoRA_pos + integration units), frozen: it is a
    /// teacher (NCE) or a sampler (self-augmentation), never trained further.</summary>
    public static LlamaModel LoadNat(StageContext ctx)
    {
        var m = LoadBase(ctx);
        try { AdapterFolder.Inspect(ctx.AdapterDir("nat")).LoadInto(m); }
        catch { m.Dispose(); throw; }
        return m;
    }

    /// <summary>Step 2's self-augmentation: the NAT model answers up to <paramref name="maxQuestions"/>
    /// training questions greedily (KV-cache decoder); the rationales whose answer the MATH checker
    /// accepts against the question's reference solution (from the teacher file) join D_pos.</summary>
    public static IReadOnlyList<Pair> SelfAugment(StageContext ctx, string teacherPath, int maxQuestions, int maxNew)
    {
        if (Done(ctx, "nce")) return ctx.Positives;
        var gold = new Dictionary<string, string>();
        foreach (var r in new TeacherDataLoader(MalformedPolicy.Skip).Load(teacherPath)) gold[r.Question] = r.Answer;
        var questions = ctx.Positives.Concat(ctx.Negatives).GroupBy(p => p.Question).Select(g => g.First()).Take(maxQuestions).ToList();
        using var nat = LoadNat(ctx);
        var prompts = questions.Select(q => ctx.Tokenizer.Encode(q.Question + "\nSolution:\n", true, false)).ToList();
        var outs = Asc.Greedy(nat, ctx.Tokenizer, prompts, maxNew);
        var added = new List<Pair>();
        for (int i = 0; i < questions.Count; i++)
        {
            string text = "Solution:\n" + ctx.Tokenizer.Decode(outs[i].Tokens);
            if (gold.TryGetValue(questions[i].Question, out var reference) && MathChecker.IsCorrect(text, reference))
                added.Add(questions[i] with { Rationale = text, Positive = true, SourceId = questions[i].SourceId + "#nat" });
        }
        ctx.Log.Add($"self-augmentation: the NAT model answered {questions.Count} training questions (greedy, KV-cache decoder); {added.Count} correct rationales joined D_pos ({ctx.Positives.Count} → {ctx.Positives.Count + added.Count})");
        return ctx.Positives.Concat(added).ToList();
    }

    /// <summary>Step 2: a fresh student LoRA distilled from the NAT model with the calibrated loss. The
    /// teachers (NAT integrated; LoRA_neg alone) run on the same model object before the student's
    /// forward by swapping adapter sets, so the base weights exist once. β per sequence → beta.jsonl.</summary>
    public static void Nce(StageContext ctx, IReadOnlyList<Pair> augmentedPositives)
    {
        const string stage = "nce";
        if (Done(ctx, stage)) { Console.WriteLine($"{stage}: complete, skipped"); return; }
        using var m = LoadNat(ctx);
        var teacher = m.Adapters.ToDictionary(kv => kv.Key, kv => kv.Value);
        m.Adapters.Clear();
        var students = m.AddLora(ctx.Lora, seed: ctx.Train.Seed + 19);
        var student = m.Adapters.ToDictionary(kv => kv.Key, kv => kv.Value);
        Directory.CreateDirectory(ctx.Dir(stage));
        using var betaLog = new StreamWriter(Path.Combine(ctx.Dir(stage), "beta.jsonl"), append: true);
        long calls = 0;
        double Objective(ModelBatch batch, bool backward, bool training)
        {
            Use(m, teacher);
            NatAdapter.SetMode(m, NatMode.Integrated);
            using var hNat = TeacherHidden.Capture(m, batch);
            NatAdapter.SetMode(m, NatMode.NegOnly);
            using var hNeg = TeacherHidden.Capture(m, batch);
            Use(m, student);
            using var head = new NceHead(hNat, hNeg);
            double loss = m.Step(batch, head, backward, training);
            if (backward)
            {
                betaLog.WriteLine($"{{\"call\":{calls++},\"beta\":[{string.Join(",", head.Beta.Select(b => b.ToString("G5", System.Globalization.CultureInfo.InvariantCulture)))}],\"ce\":{head.LastCe:G6},\"kd\":{head.LastKd:G6}}}");
                betaLog.Flush();
            }
            return loss;
        }
        var tr = new Trainer(m, Objective, ctx.Train, ctx.Dir(stage), students.SelectMany(s => s.Parameters));
        try
        {
            Fit(ctx, stage, tr, Source(ctx, augmentedPositives));
            ModelIO.SaveLora(m, ctx.AdapterDir(stage), ctx.Lora, baseModel: ctx.BaseDir);
        }
        finally
        {
            Use(m, student);
            foreach (var a in teacher.Values) a.Dispose();   // the model disposes only the adapters it holds
        }
    }

    static void Use(LlamaModel m, Dictionary<(int, Proj), IProjectionAdapter> set)
    {
        m.Adapters.Clear();
        foreach (var kv in set) m.Adapters[kv.Key] = kv.Value;
    }

    /// <summary>The ranking model M_rank: base + fresh LoRA + scalar head, BCE on balanced batches of
    /// D_pos (1) and D_neg (0). Returns held-out accuracy and AUC.</summary>
    public static (double Accuracy, double Auc) Rank(StageContext ctx, IReadOnlyList<Pair> heldPos, IReadOnlyList<Pair> heldNeg)
    {
        const string stage = "rank";
        using var m = LoadBase(ctx);
        m.AddLora(ctx.Lora, seed: ctx.Train.Seed + 23);
        using var head = new RankHead(ctx.Ops, ctx.Config.Dim, seed: ctx.Train.Seed + 29);
        string headFile = Path.Combine(ctx.AdapterDir(stage), RankHead.FileName);
        if (Done(ctx, stage) && File.Exists(headFile))
        {
            m.ClearAdapters();
            ModelIO.LoadLora(m, ctx.AdapterDir(stage));
            head.Load(headFile);
            Console.WriteLine($"{stage}: complete, skipped");
        }
        else
        {
            var src = new LabeledSource(ctx.Batcher, ctx.Positives, ctx.Negatives, LabeledSource.Layout.Balanced, ctx.Train.MicroBatch, ctx.Train.Seed);
            Fit(ctx, stage, new Trainer(m, head, ctx.Train, ctx.Dir(stage)), src);
            ModelIO.SaveLora(m, ctx.AdapterDir(stage), ctx.Lora, baseModel: ctx.BaseDir);
            head.Save(headFile);
        }
        return Evaluate(ctx, m, head, heldPos, heldNeg);
    }

    public static (double Accuracy, double Auc) Evaluate(StageContext ctx, LlamaModel m, RankHead head, IReadOnlyList<Pair> pos, IReadOnlyList<Pair> neg)
    {
        var items = pos.Select(p => (p, 1f)).Concat(neg.Select(p => (p, 0f))).ToList();
        var scores = new List<float>(); var labels = new List<float>();
        for (int i = 0; i < items.Count; i += ctx.Train.MicroBatch)
        {
            var chunk = items.Skip(i).Take(ctx.Train.MicroBatch).ToList();
            var b = ctx.Batcher.Collate(chunk.Select(c => ctx.Batcher.Encode(c.p)).ToList());
            scores.AddRange(head.Score(m, new ModelBatch(b.B, b.T, b.Tokens, b.Targets, b.AttentionMask)));
            labels.AddRange(chunk.Select(c => c.Item2));
        }
        double acc = scores.Zip(labels).Count(x => (x.First > 0.5f) == (x.Second > 0.5f)) / (double)Math.Max(1, scores.Count);
        return (acc, RankHead.Auc(scores, labels));
    }

    /// <summary>Scores (question, rationale) texts with a trained ranking model.</summary>
    public static float[] Score(StageContext ctx, IReadOnlyList<Pair> pairs) =>
        Score(ctx.Ops, ctx.Config, ctx.BaseDir, ctx.AdapterDir("rank"), ctx.Batcher, ctx.Train.MicroBatch, pairs, ctx.Weights);

    /// <summary>M_rank scores of (question, rationale) pairs: the base at <paramref name="baseDir"/> with
    /// the ranking LoRA and score head saved in <paramref name="rankDir"/>.</summary>
    public static float[] Score(IBackend ops, LlamaConfig cfg, string baseDir, string rankDir, Batcher batcher, int batchSize, IReadOnlyList<Pair> pairs, DType weights = DType.F32)
    {
        using var m = new LlamaModel(ops, cfg, weights, trainBase: false);
        ModelIO.LoadBase(m, baseDir);
        ModelIO.LoadLora(m, rankDir);
        using var head = new RankHead(ops, cfg.Dim, seed: 0);
        head.Load(Path.Combine(rankDir, RankHead.FileName));
        var r = new List<float>();
        for (int i = 0; i < pairs.Count; i += batchSize)
        {
            var b = batcher.Collate(pairs.Skip(i).Take(batchSize).Select(batcher.Encode).ToList());
            r.AddRange(head.Score(m, new ModelBatch(b.B, b.T, b.Tokens, b.Targets, b.AttentionMask)));
        }
        return r.ToArray();
    }
}
