using System.Text.Json;
using NegDistill.Checkpoints;
using NegDistill.Data;
using NegDistill.Method.Settings;
using NegDistill.Runtime;

namespace NegDistill.Method;

/// <summary>The process exit codes, one per failure class (the README's table lists them all).</summary>
public static class ExitCodes
{
    public const int Ok = 0;
    /// <summary>An unexpected failure: one line on stderr, the stack trace in a log file.</summary>
    public const int Failure = 1;
    /// <summary>Bad input: an option, a config field, a data file, a checkpoint or adapter (named).</summary>
    public const int BadInput = 2;
    /// <summary>Out of memory, or a memory plan that does not fit the device (naming what to lower).</summary>
    public const int DoesNotFit = 3;
    /// <summary>A loss, gradient, activation or weight went NaN or ±Infinity (named, with the step).</summary>
    public const int NonFinite = 4;
    /// <summary>A file could not be read or written: permission, read-only file system, disk full.</summary>
    public const int Storage = 5;
    /// <summary>The device asked for is not there (e.g. --device cuda without a GPU).</summary>
    public const int DeviceUnavailable = 6;
    /// <summary>Ctrl-C: the current step finished and was checkpointed; rerunning resumes.</summary>
    public const int Interrupted = 130;
}

/// <summary>The device asked for cannot be used. Exit code 6.</summary>
public sealed class DeviceUnavailableException(string message, Exception? inner = null) : Exception(message, inner);

/// <summary>
/// Every failure as the user sees it: the classes above each turned into one line naming the culprit
/// and their exit code; anything else into one line that points at a log file holding the stack trace.
/// </summary>
public static class Failures
{
    /// <summary>The exit code and the line for a known failure class; null for an unexpected one.</summary>
    public static (int Code, string Line)? Classify(Exception e) => e switch
    {
        AggregateException { InnerExceptions.Count: 1 } a => Classify(a.InnerExceptions[0]),
        StageInterrupted or OperationCanceledException => (ExitCodes.Interrupted, e.Message),
        PlanDoesNotFitException => (ExitCodes.DoesNotFit, $"does not fit: {e.Message}"),
        OutOfMemoryException => (ExitCodes.DoesNotFit, $"out of memory: {e.Message} (lower the micro-batch, the cut-off or the KV-cache slots)"),
        NonFiniteException => (ExitCodes.NonFinite, $"non-finite values: {e.Message}"),
        DeviceUnavailableException => (ExitCodes.DeviceUnavailable, $"device unavailable: {e.Message}"),
        SettingsException or FormatException or InvalidDataException or FileNotFoundException or DirectoryNotFoundException
            or MalformedRecordException or CheckpointFormatException or JsonException => (ExitCodes.BadInput, $"error: {e.Message}"),
        ArgumentException and not ArgumentNullException => (ExitCodes.BadInput, $"error: {e.Message}"),
        IOException or UnauthorizedAccessException => (ExitCodes.Storage, $"file system: {e.Message}"),
        _ => null,
    };

    /// <summary>Reports <paramref name="e"/> on <paramref name="err"/> (StageInterrupted on <paramref name="output"/>,
    /// as a normal stop) and returns the exit code; an unexpected exception's stack trace goes to a log
    /// file under <paramref name="logDir"/> (default: the temporary folder's negdistill/).</summary>
    public static int Report(Exception e, TextWriter err, TextWriter output, string? logDir = null)
    {
        if (Classify(e) is { } known)
        {
            (known.Code == ExitCodes.Interrupted ? output : err).WriteLine(known.Line);
            return known.Code;
        }
        string where;
        try
        {
            string dir = logDir ?? Path.Combine(Path.GetTempPath(), "negdistill");
            Directory.CreateDirectory(dir);
            string log = Path.Combine(dir, $"error-{DateTime.UtcNow:yyyyMMdd-HHmmss}-{Environment.ProcessId}.log");
            File.WriteAllText(log, $"negdistill {string.Join(' ', Environment.GetCommandLineArgs().Skip(1))}\n{DateTime.UtcNow:O}\n\n{e}\n");
            where = $"the stack trace is in {log}";
        }
        catch (Exception logFailure) when (logFailure is IOException or UnauthorizedAccessException)
        {
            where = $"no log could be written ({logFailure.Message})";
        }
        err.WriteLine($"negdistill: unexpected error ({e.GetType().Name}: {FirstLine(e.Message)}); {where}. Please report it.");
        return ExitCodes.Failure;
    }

    static string FirstLine(string s) => s.Split('\n')[0].TrimEnd();
}
