using System.CommandLine;
using NegDistill.Data;
using NegDistill.Method;
using NegDistill.Method.Settings;

namespace NegDistill.Cli;

static class Program
{
    static int Main(string[] args)
    {
        var root = new RootCommand("NegDistill: distil reasoning from a teacher's right and wrong rationales into a small LLaMA (Li et al., AAAI 2024).");
        root.Subcommands.Add(Demo.Build());
        root.Subcommands.Add(DataCommand());
        root.Subcommands.Add(Bench.Build());
        root.Subcommands.Add(PlanVerb.Build());
        foreach (var c in EvalVerbs.Build()) root.Subcommands.Add(c);
        root.Subcommands.Add(TrainVerb.Build());
        root.Subcommands.Add(PipelineVerb.Build());
        root.Subcommands.Add(Gpu.GpuCheckVerb.Build());
        root.Subcommands.Add(Gpu.PtxVerb.Build());
        root.Subcommands.Add(Gpu.InteropVerb.Build());

        AppDomain.CurrentDomain.UnhandledException += (_, e) =>   // a fault on another thread: still one line and a log
        {
            Failures.Report((Exception)e.ExceptionObject, Console.Error, Console.Out);
            Environment.Exit(ExitCodes.Failure);
        };
        var parsed = root.Parse(args);
        if (parsed.Errors.Count > 0)
        {
            foreach (var e in parsed.Errors) Console.Error.WriteLine($"error: {e.Message}");
            Console.Error.WriteLine("(see `negdistill --help`, or `negdistill VERB --help`)");
            return ExitCodes.BadInput;
        }
        return parsed.Invoke();
    }

    static Command DataCommand()
    {
        var data = new Command("data", "Data tools.");
        var split = new Command("split", "Split teacher rationales into D_pos / D_neg with the MATH checker and print the summary table.");
        var path = new Argument<string>("path") { Description = "a teacher JSONL file, a folder tree of them, or a glob" };
        var strict = new Option<bool>("--strict") { Description = "stop at the first malformed line instead of skipping and counting it" };
        split.Arguments.Add(path); split.Options.Add(strict);
        split.SetAction(r => Cli.Guarded(_ =>
        {
            Console.WriteLine(SplitReport.RenderPath(r.GetValue(path)!, policy: r.GetValue(strict) ? MalformedPolicy.Stop : MalformedPolicy.Skip));
            return ExitCodes.Ok;
        }));
        data.Subcommands.Add(split);
        return data;
    }
}

/// <summary>What every verb shares: the console reporter, and the mapping of failures to exit codes with
/// a one-line message.</summary>
static class Cli
{
    public static IReporter Console => _console ??= TextReporter.Console();
    static IReporter? _console;

    /// <summary>Runs a verb with Ctrl-C turned into cancellation (the trainer checkpoints and stops) and every
    /// failure turned into one line and its exit code (<see cref="Failures"/>).</summary>
    public static int Guarded(Func<CancellationToken, int> body)
    {
        using var cts = new CancellationTokenSource();
        ConsoleCancelEventHandler onCancel = (_, e) => { e.Cancel = true; cts.Cancel(); System.Console.Error.WriteLine("\ninterrupt: finishing the current step and checkpointing..."); };
        System.Console.CancelKeyPress += onCancel;
        try { return body(cts.Token); }
        catch (Exception e) { return Failures.Report(e, System.Console.Error, System.Console.Out); }
        finally { System.Console.CancelKeyPress -= onCancel; }
    }
}
