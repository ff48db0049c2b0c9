using System.CommandLine;
using NegDistill.Data;
using NegDistill.Method;
using NegDistill.Method.Settings;

namespace NegDistill.Cli;

/// <summary>Process exit codes, distinct per failure class (the README's table lists them).</summary>
static class ExitCodes
{
    public const int Ok = 0, Failure = 1, BadInput = 2, OutOfMemory = 3, Interrupted = 130;
}

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

    /// <summary>Runs a verb with Ctrl-C turned into cancellation (the trainer checkpoints and stops) and
    /// errors mapped to exit codes with a one-line message.</summary>
    public static int Guarded(Func<CancellationToken, int> body)
    {
        using var cts = new CancellationTokenSource();
        ConsoleCancelEventHandler onCancel = (_, e) => { e.Cancel = true; cts.Cancel(); System.Console.Error.WriteLine("\ninterrupt: finishing the current step and checkpointing..."); };
        System.Console.CancelKeyPress += onCancel;
        try { return body(cts.Token); }
        catch (StageInterrupted e) { System.Console.WriteLine(e.Message); return ExitCodes.Interrupted; }
        catch (OutOfMemoryException e) { System.Console.Error.WriteLine($"out of memory: {e.Message}"); return ExitCodes.OutOfMemory; }
        catch (PlanDoesNotFitException e) { System.Console.Error.WriteLine($"does not fit: {e.Message}"); return ExitCodes.OutOfMemory; }
        catch (Exception e) when (e is SettingsException or ArgumentException or FormatException or InvalidDataException or FileNotFoundException or DirectoryNotFoundException
                                   or MalformedRecordException or Checkpoints.CheckpointFormatException)
        {
            System.Console.Error.WriteLine($"error: {e.Message}");
            return ExitCodes.BadInput;
        }
        finally { System.Console.CancelKeyPress -= onCancel; }
    }
}
