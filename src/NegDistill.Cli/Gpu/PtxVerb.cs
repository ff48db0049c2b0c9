using System.CommandLine;
using System.Text;
using NegDistill.Kernels;

using NegDistill.Method;

namespace NegDistill.Cli.Gpu;

/// <summary>
/// `negdistill ptx`: every kernel's PTX as the engine compiles it (no GPU needed), and with ptxas at hand
/// (tools/cuda/setup.sh) the resource table (registers, shared memory, stack, spills) and the SASS of each,
/// for sm_80 and sm_90. tools/gpu/ptxas-report.sh runs it to regenerate benchmarks/PTXAS.md.
/// </summary>
static class PtxVerb
{
    public static Command Build()
    {
        var cmd = new Command("ptx", "Write every kernel's PTX (and, with ptxas, its resource table and SASS) for sm_80 and sm_90; no GPU needed.");
        var outOpt = new Option<string?>("--out") { Description = "folder for KERNEL.ARCH.ptx / .sass files (omit to write none)" };
        var listOpt = new Option<bool>("--list") { Description = "only list the kernels" };
        var binOpt = new Option<string?>("--cuda-bin") { Description = "folder with ptxas and cuobjdump (default: $NEGDISTILL_CUDA_BIN, else .cache/cuda/bin of the checkout)" };
        var mdOpt = new Option<string?>("--markdown") { Description = "write the resource table as Markdown to this file" };
        var filterOpt = new Option<string?>("--kernel") { Description = "only kernels whose name contains this" };
        foreach (var o in new Option[] { outOpt, listOpt, binOpt, mdOpt, filterOpt }) cmd.Options.Add(o);
        cmd.SetAction(r => Cli.Guarded(_ => Run(r.GetValue(outOpt), r.GetValue(listOpt), r.GetValue(binOpt), r.GetValue(mdOpt), r.GetValue(filterOpt))));
        return cmd;
    }

    static int Run(string? outDir, bool list, string? bin, string? markdown, string? filter)
    {
        var kernels = KernelCatalog.All.Where(m => filter == null || KernelCatalog.Name(m).Contains(filter, StringComparison.OrdinalIgnoreCase)).ToList();
        if (kernels.Count == 0) throw new ArgumentException($"--kernel: no kernel name contains '{filter}'");
        if (list)
        {
            foreach (var m in kernels) Console.WriteLine(KernelCatalog.Name(m));
            return ExitCodes.Ok;
        }
        bin ??= Ptxas.FindBin(Directory.GetCurrentDirectory()) ?? Ptxas.FindBin();
        if (bin == null && markdown != null)
            throw new ArgumentException("--markdown needs ptxas: run `bash tools/cuda/setup.sh` or pass --cuda-bin");
        if (outDir != null) Directory.CreateDirectory(outDir);
        var results = new List<PtxasResult>();
        foreach (var m in kernels)
            foreach (var a in KernelCatalog.Architectures)
            {
                string name = KernelCatalog.Name(m), arch = KernelCatalog.ArchName(a);
                string ptx = KernelCatalog.CompilePtx(m, a);
                if (outDir != null) File.WriteAllText(Path.Combine(outDir, $"{name}.{arch}.ptx"), ptx);
                if (bin == null) continue;
                var res = Ptxas.Run(bin, name, arch, ptx, sass: true, keepDir: outDir);
                results.Add(res);
                Console.WriteLine($"{name,-44} {arch}  {(res.Assembled ? $"{res.Registers,3} regs {res.SharedBytes,6} B smem  stack {res.StackBytes}  spills {res.SpillStores}/{res.SpillLoads}" : "DOES NOT ASSEMBLE")}");
            }
        if (bin == null) { Console.WriteLine($"wrote the PTX of {kernels.Count} kernels; ptxas not found, so no resource table (tools/cuda/setup.sh)"); return ExitCodes.Ok; }
        if (markdown != null) File.WriteAllText(markdown, Render(results));
        int bad = results.Count(r => !r.Clean);
        if (bad > 0) Console.Error.WriteLine($"{bad} kernel builds do not assemble, spill or have a stack frame");
        return bad > 0 ? ExitCodes.Failure : ExitCodes.Ok;
    }

    /// <summary>One row per kernel: per architecture registers / shared bytes / stack / spills, then the SASS
    /// instruction counts that say which path a kernel is on (tensor-core HMMA, ldmatrix LDSM, cp.async
    /// LDGSTS, 128-bit global loads, local memory).</summary>
    public static string Render(IReadOnlyList<PtxasResult> results)
    {
        var sb = new StringBuilder();
        sb.AppendLine("| kernel | sm_80 regs | sm_90 regs | smem (B) | stack (B) | spills (B, st/ld) | HMMA | LDSM | LDGSTS | LDG.E.128 | LDL+STL |");
        sb.AppendLine("|---|---|---|---|---|---|---|---|---|---|---|");
        foreach (var g in results.GroupBy(r => r.Kernel))
        {
            var s80 = g.FirstOrDefault(r => r.Arch == "sm_80");
            var s90 = g.FirstOrDefault(r => r.Arch == "sm_90");
            var any = s90 ?? s80!;
            string Regs(PtxasResult? r) => r == null ? "—" : r.Assembled ? r.Registers.ToString() : "**fails**";
            sb.AppendLine($"| `{g.Key}` | {Regs(s80)} | {Regs(s90)} | {any.SharedBytes} | {g.Max(r => r.StackBytes)} | " +
                          $"{g.Max(r => r.SpillStores)}/{g.Max(r => r.SpillLoads)} | {any.Count("HMMA")} | {any.Count("LDSM")} | {any.Count("LDGSTS")} | " +
                          $"{(any.Sass == null ? 0 : System.Text.RegularExpressions.Regex.Matches(any.Sass, @"LDG\.E\.128").Count)} | {g.Max(r => r.Count("LDL") + r.Count("STL"))} |");
        }
        return sb.ToString();
    }
}
