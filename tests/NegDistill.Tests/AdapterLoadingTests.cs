using NegDistill.Checkpoints;
using NegDistill.Cli;
using NegDistill.Cli.Pipeline;
using NegDistill.Data.Synthetic;
using NegDistill.Model;
using NegDistill.Runtime;
using NegDistill.Train;

namespace NegDistill.Tests;

/// <summary>`sample`, `eval` and `pipeline` load the adapter kind a folder holds: the NAT model as eval
/// loads it is the NAT model training ended with (LoRA_neg + LoRA_pos + integration unit).</summary>
[TestFixture]
public class AdapterLoadingTests
{
    [Test]
    public void NatAsEvalLoadsIt_GivesTheLogitsOfTheNatModelAtTheEndOfTraining()
    {
        var dir = FrontEndTests.TempDir();
        var cfg = FrontEndTests.ByteTiny;
        string baseDir = Path.Combine(dir, "base");
        using (var b = new LlamaModel(new CpuBackend(), cfg, DType.F32, seed: 1)) ModelIO.SaveBase(b, baseDir);
        string teacher = Path.Combine(dir, "teacher.jsonl");
        ArithmeticWorld.WriteTeacherJsonl(teacher, seed: 3, from: 0, count: 8);
        var split = new Data.DatasetSplitter().SplitPath(teacher);
        var tok = new Data.ByteTokenizer();
        var ops = new CpuBackend();
        var lora = new LoraConfig { Rank = 4, Alpha = 8, Dropout = 0f };
        var ctx = new StageContext
        {
            Ops = ops, Config = cfg, BaseDir = baseDir, OutDir = Path.Combine(dir, "out"), Tokenizer = tok,
            Batcher = new Data.Batcher(tok, new Data.BatchingOptions { CutoffLength = 64, BatchSize = 2, Seed = 1 }),
            Train = new TrainConfig { Steps = 6, MicroBatch = 2, EffectiveBatch = 2, LearningRate = 1e-2f, WarmupSteps = 0, CheckpointEvery = 0, Seed = 1 },
            Lora = lora, Positives = split.Positives, Negatives = split.Negatives,
        };
        Stages.LoraCe(ctx, "neg", split.Negatives);
        Stages.Nat(ctx);

        // The NAT model training ended with: LoRA_neg from the neg stage, and LoRA_pos + the integration
        // units exactly as the trainer's final checkpoint holds them (not through the adapter writer).
        using var trained = new LlamaModel(ops, cfg, DType.F32, seed: 1);
        ModelIO.LoadBase(trained, baseDir);
        var nats = NatAdapter.AttachFromPeft(trained, ctx.AdapterDir("neg"), lora, seed: 99, trainable: false).Adapters;
        using (var state = SafeTensors.Open(Path.Combine(ctx.Dir("nat"), Trainer.StateFile)))
            foreach (var p in nats.SelectMany(n => n.Parameters))
                ops.Upload(p.W, state.ReadFloat32("param." + p.Name));
        var text = tok.Encode(split.Positives[0].Question + "\n" + split.Positives[0].Rationale, true, true).Take(40).ToArray();
        var batch = new ModelBatch(1, text.Length, text, Enumerable.Repeat(-1, text.Length).ToArray(), Enumerable.Repeat(1f, text.Length).ToArray());
        float[] atEnd = trained.Logits(batch);
        NatAdapter.SetMode(trained, NatMode.PosOnly);
        Assert.That(trained.Logits(batch), Is.Not.EqualTo(atEnd), "the integration unit changes the logits (else this test could not tell NAT from LoRA_pos)");

        using var loaded = Eval.LoadModel(ops, cfg, DType.F32, baseDir, ctx.AdapterDir("nat"), seed: 5);
        Assert.That(loaded.Logits(batch), Is.EqualTo(atEnd), "eval's NAT model is not the trained NAT model");
    }
}
