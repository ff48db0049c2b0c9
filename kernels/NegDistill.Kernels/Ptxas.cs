using System.Diagnostics;
using System.Text.RegularExpressions;

namespace NegDistill.Kernels;

/// <summary>What ptxas -v reports for one kernel on one architecture, plus its SASS when asked.</summary>
public sealed record PtxasResult(string Kernel, string Arch, bool Assembled, int Registers, int SharedBytes, int StackBytes,
    int SpillStores, int SpillLoads, string Log, string? Sass)
{
    /// <summary>The static bar every kernel must pass: assembles, no spills, no stack frame.</summary>
    public bool Clean => Assembled && StackBytes == 0 && SpillStores == 0 && SpillLoads == 0;

    /// <summary>How many SASS instructions start with <paramref name="opcode"/> (e.g. "HMMA", "LDSM", "LDL").</summary>
    public int Count(string opcode) => Sass == null ? 0 : Regex.Matches(Sass, @"\b" + Regex.Escape(opcode) + @"[\.\s]").Count;
}

/// <summary>
/// Runs ptxas (and cuobjdump for SASS) from Debian's CUDA 11.8 toolkit, as fetched by
/// tools/cuda/setup.sh into .cache/cuda/bin, on the PTX that <see cref="KernelCatalog"/> compiles.
/// No GPU is needed. The PTX version line is lowered first (<see cref="KernelCatalog.ForPtxas118"/>).
/// </summary>
public static partial class Ptxas
{
    /// <summary>The folder holding ptxas and cuobjdump: $NEGDISTILL_CUDA_BIN, else .cache/cuda/bin above
    /// <paramref name="start"/> (the repository's cache), else null.</summary>
    public static string? FindBin(string? start = null)
    {
        var env = Environment.GetEnvironmentVariable("NEGDISTILL_CUDA_BIN");
        if (!string.IsNullOrEmpty(env) && File.Exists(Path.Combine(env, "ptxas"))) return env;
        for (var d = new DirectoryInfo(start ?? AppContext.BaseDirectory); d != null; d = d.Parent)
        {
            var bin = Path.Combine(d.FullName, ".cache", "cuda", "bin");
            if (File.Exists(Path.Combine(bin, "ptxas"))) return bin;
        }
        return null;
    }

    public static PtxasResult Run(string bin, string kernel, string arch, string ptx, bool sass, string? keepDir = null)
    {
        string dir = keepDir ?? Path.Combine(Path.GetTempPath(), "negdistill-ptxas-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        try
        {
            string stem = Path.Combine(dir, $"{kernel}.{arch}");
            File.WriteAllText(stem + ".ptx", KernelCatalog.ForPtxas118(ptx));
            var (rc, log) = Exec(Path.Combine(bin, "ptxas"), $"-arch={arch} -v -o \"{stem}.cubin\" \"{stem}.ptx\"");
            if (rc != 0) return new PtxasResult(kernel, arch, false, 0, 0, 0, 0, 0, log, null);
            var props = Props().Match(log);
            var used = Used().Match(log);
            var smem = Smem().Match(log);
            string? s = null;
            if (sass)
            {
                var (src, sout) = Exec(Path.Combine(bin, "cuobjdump"), $"-sass \"{stem}.cubin\"");
                s = src == 0 ? sout : throw new InvalidOperationException($"cuobjdump -sass {stem}.cubin failed: {sout}");
                if (keepDir != null) File.WriteAllText(stem + ".sass", s);
            }
            return new PtxasResult(kernel, arch, true,
                used.Success ? int.Parse(used.Groups[1].Value) : 0,
                smem.Success ? int.Parse(smem.Groups[1].Value) : 0,
                props.Success ? int.Parse(props.Groups[1].Value) : 0,
                props.Success ? int.Parse(props.Groups[2].Value) : 0,
                props.Success ? int.Parse(props.Groups[3].Value) : 0,
                log, s);
        }
        finally { if (keepDir == null) Directory.Delete(dir, recursive: true); }
    }

    static (int, string) Exec(string exe, string args)
    {
        var psi = new ProcessStartInfo(exe, args) { RedirectStandardOutput = true, RedirectStandardError = true };
        using var p = Process.Start(psi) ?? throw new InvalidOperationException($"could not start {exe}");
        var err = p.StandardError.ReadToEndAsync();
        string o = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        return (p.ExitCode, o + err.Result);
    }

    [GeneratedRegex(@"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")]
    private static partial Regex Props();
    [GeneratedRegex(@"Used (\d+) registers")]
    private static partial Regex Used();
    [GeneratedRegex(@"(\d+) bytes smem")]
    private static partial Regex Smem();
}
