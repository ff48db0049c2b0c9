using System.CommandLine;

namespace NegDistill.Cli.Gpu;

/// <summary>`negdistill gpu-check`: the options; the work is <see cref="NegDistill.GpuCheck.GpuCheck"/>.</summary>
static class GpuCheckVerb
{
    public static Command Build()
    {
        var cmd = new Command("gpu-check", "Verify every kernel against the CPU twin and time kernels, stages and decoding on an accelerator; writes report.md and report.json.");
        var dev = new Option<string>("--device") { Description = "cuda, ilgpu-cpu or cpu", DefaultValueFactory = _ => "cuda" };
        var quick = new Option<bool>("--quick") { Description = "tiny shapes only (seconds; the CPU accelerator and CI)" };
        var budget = new Option<double>("--budget") { Description = "seconds for the whole run; parts not reached are listed", DefaultValueFactory = _ => 480 };
        var outOpt = new Option<string>("--out") { Description = "folder for report.md and report.json", DefaultValueFactory = _ => "runs/gpu-check" };
        var parts = new Option<string>("--parts") { Description = "comma-separated subset of: kernels, model, stages, decode", DefaultValueFactory = _ => "kernels,model,stages,decode" };
        foreach (var o in new Option[] { dev, quick, budget, outOpt, parts }) cmd.Options.Add(o);
        cmd.SetAction(r => Cli.Guarded(_ => NegDistill.GpuCheck.GpuCheck.Run(r.GetValue(dev)!, r.GetValue(quick), r.GetValue(budget), r.GetValue(outOpt)!, r.GetValue(parts)!)));
        return cmd;
    }

}
