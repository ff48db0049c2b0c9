using System.Text.Json;
using NegDistill.Data;
using NegDistill.Model;
using NegDistill.Train;

namespace NegDistill.Method.Stages;

/// <summary>One line of nce/beta.jsonl: β per sequence of one micro-batch, and its CE and KD terms.</summary>
public sealed record BetaRecord(long Call, double[] Beta, double Ce, double Kd);

/// <summary>
/// Step 2, Negative Calibrated Enhancement. Self-augmentation first: the NAT model answers the
/// training questions greedily and the rationales the MATH checker accepts against the teacher file's
/// reference join D_pos. Then a fresh student LoRA is distilled from the NAT model with the calibrated
/// loss (method.md step 2): the two teachers (NAT integrated, LoRA_neg alone) run on the student's own
/// model, swapped in with <see cref="LlamaModel.WithAdapters"/>, so the base weights exist once.
/// β per sequence goes to beta.jsonl.
/// </summary>
public sealed class NceStage : Stage
{
    public const string BetaLog = "beta.jsonl";

    public override string Name => "nce";
    public override string Summary => "step 2: NCE, self-augmentation by the NAT model, then a fresh LoRA distilled with the calibrated loss";
    public override int Order => 3;
    public override IReadOnlyList<string> Requires => ["neg", "nat"];
    public override TrainingStage PlanKind => TrainingStage.Nce;

    static readonly NatStage Nat = new();

    protected override void Train(StageContext ctx) => Distil(ctx, SelfAugment(ctx));

    /// <summary>D_pos with the NAT model's correct greedy answers to up to ctx.AugmentQuestions training
    /// questions (KV-cache decoder, ctx.AugmentMaxNewTokens each).</summary>
    public static IReadOnlyList<Pair> SelfAugment(StageContext ctx)
    {
        var gold = new Dictionary<string, string>();
        if (ctx.TeacherData != null)
            foreach (var r in new TeacherDataLoader(MalformedPolicy.Skip).Load(ctx.TeacherData)) gold[r.Question] = r.Answer;
        var questions = ctx.Positives.Concat(ctx.Negatives).GroupBy(p => p.Question).Select(g => g.First()).Take(ctx.AugmentQuestions).ToList();
        using var nat = Nat.Load(ctx);
        var prompts = questions.Select(q => ctx.Tokenizer.Encode(PromptFormat.Prompt(q.Question), true, false)).ToList();
        var outs = Asc.Greedy(nat, ctx.Tokenizer, prompts, ctx.AugmentMaxNewTokens);
        var added = new List<Pair>();
        for (int i = 0; i < questions.Count; i++)
        {
            string text = PromptFormat.Rationale(ctx.Tokenizer.Decode(outs[i].Tokens));
            if (gold.TryGetValue(questions[i].Question, out var reference) && MathChecker.IsCorrect(text, reference))
                added.Add(questions[i] with { Rationale = text, Positive = true, SourceId = questions[i].SourceId + "#nat" });
        }
        ctx.Log.Add($"self-augmentation: the NAT model answered {questions.Count} training questions (greedy, KV-cache decoder); {added.Count} correct rationales joined D_pos ({ctx.Positives.Count} → {ctx.Positives.Count + added.Count})");
        return ctx.Positives.Concat(added).ToList();
    }

    /// <summary>
    /// One step of method.md's step 2 on a model whose adapters are the student's: both teachers' final hidden
    /// states without gradients (the NAT model with its integration unit, then LoRA_neg alone, by swapping in
    /// <paramref name="teachers"/>, so the base weights exist once), then the student's forward and, when
    /// <paramref name="backward"/>, backward through the calibrated loss. The stage's objective, and what
    /// gpu-check times at LLaMA-7b shape.
    /// </summary>
    public static (double Loss, double[] Beta, double Ce, double Kd) Step(LlamaModel m, IReadOnlyDictionary<(int Layer, Proj Proj), IProjectionAdapter> teachers,
        ModelBatch batch, bool backward, bool training)
    {
        Runtime.Tensor hNat, hNeg;
        using (m.WithAdapters(teachers))
        {
            NatAdapter.SetMode(m, NatMode.Integrated);
            hNat = TeacherHidden.Capture(m, batch);
            NatAdapter.SetMode(m, NatMode.NegOnly);
            hNeg = TeacherHidden.Capture(m, batch);
        }
        using (hNat)
        using (hNeg)
        using (var head = new NceHead(hNat, hNeg))
        {
            double loss = m.Step(batch, head, backward, training);
            return (loss, head.Beta.ToArray(), head.LastCe, head.LastKd);
        }
    }

    /// <summary>The calibrated distillation on <paramref name="positives"/>.</summary>
    public void Distil(StageContext ctx, IReadOnlyList<Pair> positives)
    {
        using var m = Nat.Load(ctx);
        var teacherSet = m.DetachAdapters();
        try
        {
            var students = m.AddLora(ctx.Lora, seed: Seeds.Of(ctx.Seed, SeedStream.NceStudent));
            using var betaLog = new StreamWriter(Path.Combine(Directory.CreateDirectory(ctx.Dir(Name)).FullName, BetaLog), append: true);
            long calls = 0;
            double Objective(ModelBatch batch, bool backward, bool training)
            {
                var (loss, beta, ce, kd) = Step(m, teacherSet, batch, backward, training);
                if (backward)
                {
                    betaLog.WriteLine(JsonSerializer.Serialize(new BetaRecord(calls++, beta, ce, kd), MethodJson.Default.BetaRecord));
                    betaLog.Flush();
                }
                return loss;
            }
            var tr = new Trainer(m, Objective, ctx.Loop, ctx.Dir(Name), students.SelectMany(s => s.Parameters));
            Fit(ctx, Name, tr, new Sources.BatchSource(ctx.Batcher, ctx.Batcher.EncodeAll(positives)));
            ModelIO.SaveLora(m, ctx.AdapterDir(Name), ctx.Lora, baseModel: ctx.Base.Dir);
        }
        finally
        {
            foreach (var a in teacherSet.Values) a.Dispose();   // detached: the model disposes only the student's
        }
    }
}
