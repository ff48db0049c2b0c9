using System.Text.Json;
using NegDistill.GpuCheck;
using NegDistill.Kernels;
using NegDistill.Model;
using NegDistill.Runtime;

namespace NegDistill.Tests;

/// <summary>
/// The gpu-check harness itself: its comparison catches an unwritten element (NaN poison) and a wrong
/// value, passes a right one; its model and kernel parts run end to end on ILGPU's CPU accelerator and
/// write both reports; the interop verbs reproduce in-process logits and write a non-trivial adapter.
/// </summary>
[TestFixture]
public class GpuCheckTests
{
    static OpCase Case(Action<IBackend, Dictionary<string, Tensor>> run) => new()
    {
        Family = "Test", Name = "axpy", Shape = "64",
        Inputs = () => new() { ["x"] = new(DType.F32, [64], OpCases.Rand(64)), ["y"] = new(DType.F32, [64]) },
        Run = run, Outputs = ["y"], Poisoned = ["y"],
    };

    static void Correct(IBackend o, Dictionary<string, Tensor> t) { o.Fill(t["y"], 0f); o.Axpy(t["y"], t["x"], 2f, 64); }

    static GpuReport RunCase(OpCase c)
    {
        var rep = new GpuReport();
        new CheckRun(TestUtil.Ilgpu, new CpuBackend(), rep, new Budget(60)).Cases("test", [c], time: false);
        return rep;
    }

    [Test]
    public void Comparison_PassesRightResults_CatchesUnwrittenAndWrongOnes()
    {
        Assert.That(RunCase(Case(Correct)).Failed, Is.Zero);
        // the device side leaves the last element as it was (NaN-poisoned): must fail with a bad element
        var unwritten = RunCase(Case((o, t) =>
        {
            if (o is IlgpuBackend) { using var tmp = o.Alloc("y63", DType.F32, 63); o.Fill(tmp, 0f); o.Axpy(tmp, o.View(t["x"], 0, 63), 2f, 63); o.Copy(o.View(t["y"], 0, 63), tmp); }
            else Correct(o, t);
        }));
        Assert.That(unwritten.Failed, Is.EqualTo(1));
        Assert.That(unwritten.Checks[0].BadElements, Is.EqualTo(1));
        // a small systematic error (1e-3 relative) is above the fp32 tolerance
        var wrong = RunCase(Case((o, t) => { Correct(o, t); if (o is IlgpuBackend) o.Scale(t["y"], 1.001f, 64); }));
        Assert.That(wrong.Failed, Is.EqualTo(1));
        Assert.That(wrong.Checks[0].RelErr, Is.EqualTo(1e-3).Within(1e-5));
    }

    [Test]
    public void QuickRunOnTheCpuAccelerator_WritesBothReports()
    {
        var dir = FrontEndTests.TempDir();
        int rc = NegDistill.GpuCheck.GpuCheck.Run("ilgpu-cpu", quick: true, budgetSeconds: 300, outDir: dir, partsList: "model");
        Assert.That(rc, Is.Zero);
        var md = File.ReadAllText(Path.Combine(dir, "report.md"));
        Assert.That(md, Does.Contain("ILGPU CPU accelerator").And.Contain("| model step | tiny | logits |"));
        using var json = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "report.json")));
        var checks = json.RootElement.GetProperty("checks");
        Assert.That(checks.GetArrayLength(), Is.EqualTo(3));
        Assert.That(checks.EnumerateArray().All(c => c.GetProperty("pass").GetBoolean()), Is.True);
    }

    [Test]
    public void EveryKernelFamilyHasACase()
    {
        // every *Kernels class of the kernels assembly is exercised by some op case (by family name)
        var families = OpCases.All(OpCases.Shapes.Tiny, MatMulTolerance.Simt).Select(c => c.Family).ToHashSet();
        foreach (var k in KernelCatalog.All.Select(m => m.DeclaringType!.Name[..^"Kernels".Length]).Distinct())
        {
            string family = k switch { "KvCache" => "KvCache", "Nat" => "Integration", "CrossEntropy" => "CrossEntropy", _ => k };
            Assert.That(families, Does.Contain(family), $"no gpu-check case for {k}Kernels");
        }
    }

    [Test]
    public void Interop_LogitsEqualInProcess_AndRandomLoraChangesThem()
    {
        var dir = FrontEndTests.TempDir();
        string baseDir = Path.Combine(dir, "base");
        var cfg = LlamaConfig.Tiny;
        var ops = new CpuBackend();
        using (var m = new LlamaModel(ops, cfg, DType.BF16, seed: 3)) ModelIO.SaveBase(m, baseDir, maxShardBytes: 20_000);
        string tokens = "1,5,9,12;2,7,7,30";
        string outBase = Path.Combine(dir, "base.json"), outLora = Path.Combine(dir, "lora.json"), adapter = Path.Combine(dir, "adapter");
                int Cli(params string[] args) { var (rc, _, log) = FrontEndTests.RunCli(args, killWhen: null); Assert.That(log, Does.Not.Contain("Unhandled exception")); return rc; }
        Assert.That(Cli("interop", "logits", "--base", baseDir, "--tokens", tokens, "--out", outBase), Is.Zero);
        Assert.That(Cli("interop", "random-lora", "--base", baseDir, "--out", adapter), Is.Zero);
        Assert.That(Cli("interop", "logits", "--base", baseDir, "--adapter", adapter, "--tokens", tokens, "--out", outLora), Is.Zero);

        using var m2 = new LlamaModel(ops, cfg, DType.BF16);
        ModelIO.LoadBase(m2, baseDir);
        var batch = new ModelBatch(2, 4, [1, 5, 9, 12, 2, 7, 7, 30], Enumerable.Repeat(-1, 8).ToArray(), Enumerable.Repeat(1f, 8).ToArray());
        var want = m2.Logits(batch);
        float[] Read(string f)
        {
            using var d = JsonDocument.Parse(File.ReadAllText(f));
            return d.RootElement.GetProperty("logits").EnumerateArray().SelectMany(r => r.EnumerateArray()).SelectMany(p => p.EnumerateArray()).Select(v => v.GetSingle()).ToArray();
        }
        Assert.That(Read(outBase), Is.EqualTo(want));
        var withLora = Read(outLora);
        Assert.That(withLora.Zip(want).Max(x => Math.Abs(x.First - x.Second)), Is.GreaterThan(1e-4f), "a random LoRA with non-zero B changes the logits");
        Assert.That(Cli("interop", "logits", "--base", baseDir, "--tokens", "1,2;3", "--out", outBase), Is.EqualTo(2), "ragged rows are bad input");
    }
}
