using System.Text;
using System.Text.Json;

namespace NegDistill.Data.Tests;

/// <summary>A temporary folder removed at dispose.</summary>
internal sealed class TempDir : IDisposable
{
    public TempDir()
    {
        Path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "negdistill-data-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(Path);
    }

    public string Path { get; }

    public string File(string relative, string content)
    {
        string full = System.IO.Path.Combine(Path, relative);
        Directory.CreateDirectory(System.IO.Path.GetDirectoryName(full)!);
        System.IO.File.WriteAllText(full, content, new UTF8Encoding(false));
        return full;
    }

    public void Dispose()
    {
        try
        {
            Directory.Delete(Path, recursive: true);
        }
        catch (IOException)
        {
            // A test that failed while a file was open; the OS temp cleaner will take it.
        }
    }
}

internal static class Json
{
    /// <summary>One teacher record as a JSON line.</summary>
    public static string Teacher(string question, string answer, IEnumerable<string> rationales, string level = "Level 3", string type = "Algebra") =>
        JsonSerializer.Serialize(new Dictionary<string, object>
        {
            ["question"] = question,
            ["answer"] = answer,
            ["generated_answer"] = rationales.ToArray(),
            ["level"] = level,
            ["type"] = type,
        });
}

internal static class RepoPaths
{
    /// <summary>The repository root (the folder holding NegDistill.sln), found upwards from the test binaries.</summary>
    public static string Root
    {
        get
        {
            string? dir = TestContext.CurrentContext.TestDirectory;
            while (dir is not null)
            {
                if (System.IO.File.Exists(Path.Combine(dir, "NegDistill.sln")))
                {
                    return dir;
                }

                dir = Path.GetDirectoryName(dir);
            }

            throw new InvalidOperationException("repository root (NegDistill.sln) not found above " + TestContext.CurrentContext.TestDirectory);
        }
    }

    /// <summary>.cache/tokenizer, or NEGDISTILL_TOKENIZER_CACHE when set.</summary>
    public static string TokenizerCache =>
        Environment.GetEnvironmentVariable("NEGDISTILL_TOKENIZER_CACHE") is { Length: > 0 } env
            ? env
            : Path.Combine(Root, ".cache", "tokenizer");

    /// <summary>A file of the tokenizer cache; the test is reported as ignored when setup.sh has not been run.</summary>
    public static string RequireCached(params string[] relative)
    {
        string path = Path.Combine([TokenizerCache, .. relative]);
        if (!System.IO.File.Exists(path))
        {
            Assert.Ignore("run tools/tokenizer/setup.sh (missing " + path + ")");
        }

        return path;
    }
}
