// Checks on the parity harness itself: the worker rejects bad input loudly (non-zero exit, message naming
// the file and the tensor), and the build-order reference to benchmarks/NegDistill.TorchReference copies
// nothing of TorchSharp or libtorch into this project's output.
using NegDistill.Checkpoints;

namespace NegDistill.TorchParity.Tests;

[TestFixture]
public class HarnessTests
{
    [Test]
    public void Worker_MissingTensor_ExitsWith2AndNamesFileAndTensor()
    {
        string dir = TorchWorker.NewDir("bad");
        try
        {
            File.WriteAllText(Path.Combine(dir, "nce.json"), """{"a": 0.5, "temperature": 1.0}""");
            SafeTensors.Write(Path.Combine(dir, "nce.safetensors"), [TorchWorker.F64("z_s", [1, 2, 3], new double[6])]);   // no z_nat
            var r = TorchWorker.RunRaw("nce", dir, Path.Combine(dir, "out"));
            TestContext.Out.WriteLine($"exit {r.ExitCode}, stderr: {r.Stderr.Trim()}");
            Assert.That(r.ExitCode, Is.EqualTo(2), $"bad input exits with 2; stderr:\n{r.Stderr}");
            Assert.That(r.Stderr, Does.Contain("nce.safetensors").And.Contain("'z_nat'"));
            Assert.That(File.Exists(Path.Combine(dir, "out", "out.safetensors")), Is.False, "nothing written on failure");
        }
        finally { TorchWorker.Cleanup(dir); }
    }

    [Test]
    public void TestOutput_HoldsNoTorchSharpOrLibtorch()
    {
        var bin = AppContext.BaseDirectory;
        var torchFiles = Directory.EnumerateFiles(bin, "*", SearchOption.AllDirectories)
            .Where(f => Path.GetFileName(f) is var n && (n.StartsWith("libtorch") || n.StartsWith("libc10") || n.StartsWith("TorchSharp") || n.StartsWith("NegDistill.TorchReference")))
            .ToList();
        Assert.That(torchFiles, Is.Empty, $"the worker reference is for build order only; {bin} should hold none of its files");
    }
}
