using NegDistill.Data;

namespace NegDistill.Data.Tests;

public class LoaderTests
{
    private static string GoodLine(int i) =>
        Json.Teacher($"Problem:\nWhat is {i}+{i}?", $"It is $\\boxed{{{2 * i}}}$.", [$"Solution:\n\\boxed{{{2 * i}}}", "Solution:\n\\boxed{0}"]);

    [Test]
    public void Teacher_file_streams_good_records_with_fields_and_line_numbers()
    {
        using var dir = new TempDir();
        string file = dir.File("a.jsonl", GoodLine(1) + "\n" + GoodLine(2) + "\n");
        var loader = new TeacherDataLoader();
        var records = loader.Load(file).ToList();

        Assert.That(records, Has.Count.EqualTo(2));
        Assert.That(records[0].Question, Is.EqualTo("Problem:\nWhat is 1+1?"));
        Assert.That(records[0].Answer, Is.EqualTo("It is $\\boxed{2}$."));
        Assert.That(records[0].GeneratedAnswers, Is.EqualTo(new[] { "Solution:\n\\boxed{2}", "Solution:\n\\boxed{0}" }));
        Assert.That(records[0].Level, Is.EqualTo("Level 3"));
        Assert.That(records[0].Type, Is.EqualTo("Algebra"));
        Assert.That(records[0].Subject, Is.EqualTo("algebra"));
        Assert.That(records[1].Line, Is.EqualTo(2));
        Assert.That(records[1].SourceFile, Is.EqualTo(file));
        Assert.That(loader.Report.Records, Is.EqualTo(2));
        Assert.That(loader.Report.Files, Is.EqualTo(1));
        Assert.That(loader.Report.Problems, Is.Zero);
    }

    [Test]
    public void Crlf_bom_blank_lines_and_missing_final_newline_are_handled()
    {
        using var dir = new TempDir();
        string file = Path.Combine(dir.Path, "b.jsonl");
        File.WriteAllText(file, "\uFEFF" + GoodLine(1) + "\r\n\r\n   \r\n" + GoodLine(2), new System.Text.UTF8Encoding(false));
        var loader = new TeacherDataLoader();
        var records = loader.Load(file).ToList();
        Assert.That(records.Select(r => r.Line), Is.EqualTo(new long[] { 1, 4 }));
        Assert.That(loader.Report.BlankLines, Is.EqualTo(2));
        Assert.That(loader.Report.Lines, Is.EqualTo(4));
    }

    [Test]
    public void Long_lines_beyond_the_read_buffer_are_read_whole()
    {
        using var dir = new TempDir();
        string longRationale = "Solution:\n" + new string('x', 300_000) + " \\boxed{2}";
        string file = dir.File("long.jsonl", Json.Teacher("Q", "\\boxed{2}", [longRationale]) + "\n" + GoodLine(3) + "\n");
        var records = new TeacherDataLoader().Load(file).ToList();
        Assert.That(records, Has.Count.EqualTo(2));
        Assert.That(records[0].GeneratedAnswers[0], Is.EqualTo(longRationale));
        Assert.That(records[1].Line, Is.EqualTo(2));
    }

    [Test]
    public void Malformed_line_under_Stop_throws_naming_file_and_line()
    {
        using var dir = new TempDir();
        string file = dir.File("bad.jsonl", GoodLine(1) + "\n{\"question\": \"Q\", \"answer\": \n" + GoodLine(3) + "\n");
        var loader = new TeacherDataLoader(MalformedPolicy.Stop);
        var seen = new List<TeacherRecord>();
        var ex = Assert.Throws<MalformedRecordException>(() =>
        {
            foreach (TeacherRecord r in loader.Load(file))
            {
                seen.Add(r);
            }
        });
        Assert.That(ex!.File, Is.EqualTo(file));
        Assert.That(ex.Line, Is.EqualTo(2));
        Assert.That(ex.Message, Does.Contain(file + ":2"));
        Assert.That(ex.Reason, Does.StartWith("invalid JSON"));
        Assert.That(seen, Has.Count.EqualTo(1)); // streaming: the good first line was delivered before the failure
    }

    [Test]
    public void Malformed_lines_under_Skip_are_counted_and_listed()
    {
        using var dir = new TempDir();
        string content = string.Join("\n",
            GoodLine(1),
            "not json at all",
            "[1, 2]",
            "{\"answer\": \"\\\\boxed{1}\", \"generated_answer\": [\"a\", \"b\", \"c\"]}",  // no question: 3 rationales lost
            "{\"question\": \"Q\", \"answer\": 5, \"generated_answer\": []}",
            "{\"question\": \"Q\", \"answer\": \"A\", \"generated_answer\": \"x\"}",
            "{\"question\": \"Q\", \"answer\": \"A\"}",
            "{\"question\": \"Q\", \"answer\": \"A\", \"generated_answer\": [\"ok\", 7, null]}",  // two invalid elements
            "{\"question\": \"Q\", \"answer\": \"A\", \"generated_answer\": []} trailing",
            GoodLine(10)) + "\n";
        string file = dir.File("mixed.jsonl", content);
        var loader = new TeacherDataLoader(MalformedPolicy.Skip);
        var records = loader.Load(file).ToList();

        Assert.That(records.Select(r => r.Line), Is.EqualTo(new long[] { 1, 8, 10 }));
        Assert.That(records[1].GeneratedAnswers, Is.EqualTo(new string?[] { "ok", null, null }));
        LoadReport rep = loader.Report;
        Assert.That(rep.MalformedRecords, Is.EqualTo(7));
        Assert.That(rep.InvalidRationales, Is.EqualTo(2));
        Assert.That(rep.SkippedRecordRationales, Is.EqualTo(3));
        Assert.That(rep.MalformedRationales, Is.EqualTo(5));
        Assert.That(rep.Problems, Is.EqualTo(9));
        Assert.That(rep.Records + rep.MalformedRecords + rep.BlankLines, Is.EqualTo(rep.Lines)); // every line accounted for

        var byLine = rep.Entries.ToLookup(e => e.Line);
        Assert.That(byLine[2].Single().Reason, Does.StartWith("invalid JSON"));
        Assert.That(byLine[3].Single().Reason, Does.Contain("expected a JSON object"));
        Assert.That(byLine[4].Single().Reason, Does.Contain("missing field 'question'"));
        Assert.That(byLine[4].Single().Rationales, Is.EqualTo(3));
        Assert.That(byLine[5].Single().Reason, Does.Contain("'answer' must be a string"));
        Assert.That(byLine[6].Single().Reason, Does.Contain("must be an array"));
        Assert.That(byLine[7].Single().Reason, Does.Contain("missing field 'generated_answer'"));
        Assert.That(byLine[8].Select(e => e.Reason), Is.EquivalentTo(new[]
        {
            "generated_answer[1] must be a string, found Number",
            "generated_answer[2] must be a string, found Null",
        }));
        Assert.That(byLine[8].All(e => !e.RecordSkipped), Is.True);
        Assert.That(byLine[9].Single().Reason, Does.StartWith("invalid JSON"));
        Assert.That(rep.Entries.All(e => e.File == file), Is.True);
    }

    [Test]
    public void Invalid_rationale_element_under_Stop_throws()
    {
        using var dir = new TempDir();
        string file = dir.File("e.jsonl", "{\"question\": \"Q\", \"answer\": \"A\", \"generated_answer\": [\"ok\", 7]}\n");
        var ex = Assert.Throws<MalformedRecordException>(() => new TeacherDataLoader(MalformedPolicy.Stop).Load(file).ToList());
        Assert.That(ex!.Line, Is.EqualTo(1));
        Assert.That(ex.Reason, Does.Contain("generated_answer[1]"));
    }

    [Test]
    public void Invalid_utf8_is_reported_not_replaced()
    {
        using var dir = new TempDir();
        string file = Path.Combine(dir.Path, "utf.jsonl");
        byte[] good = System.Text.Encoding.UTF8.GetBytes(GoodLine(1) + "\n");
        byte[] bad = [.. System.Text.Encoding.UTF8.GetBytes("{\"question\": \"Q"), 0xFF, 0xFE, .. System.Text.Encoding.UTF8.GetBytes("\", \"answer\": \"A\", \"generated_answer\": []}\n")];
        File.WriteAllBytes(file, [.. good, .. bad]);
        var loader = new TeacherDataLoader(MalformedPolicy.Skip);
        Assert.That(loader.Load(file).Count(), Is.EqualTo(1));
        Assert.That(loader.Report.Entries.Single().Line, Is.EqualTo(2));
    }

    [Test]
    public void Folder_tree_is_read_recursively_in_natural_order()
    {
        using var dir = new TempDir();
        dir.File("train_algebra/10.jsonl", GoodLine(10) + "\n");
        dir.File("train_algebra/2.jsonl", GoodLine(2) + "\n");
        dir.File("train_geometry/sub/1.jsonl", GoodLine(1) + "\n");
        dir.File("train_algebra/notes.txt", "not data");
        var records = new TeacherDataLoader().Load(dir.Path).ToList();
        Assert.That(records.Select(r => Path.GetRelativePath(dir.Path, r.SourceFile).Replace('\\', '/')),
            Is.EqualTo(new[] { "train_algebra/2.jsonl", "train_algebra/10.jsonl", "train_geometry/sub/1.jsonl" }));
    }

    [Test]
    public void Glob_selects_matching_files()
    {
        using var dir = new TempDir();
        dir.File("gpt4/train_algebra_8/0.jsonl", GoodLine(0) + "\n");
        dir.File("gpt4/train_algebra_8/1.jsonl", GoodLine(1) + "\n");
        dir.File("gpt4/train_geometry_8/0.jsonl", GoodLine(5) + "\n");
        dir.File("gpt35/train_algebra_8/0.jsonl", GoodLine(7) + "\n");
        string root = dir.Path.Replace('\\', '/');

        Assert.That(new TeacherDataLoader().Load(root + "/gpt4/train_algebra_*/*.jsonl").Count(), Is.EqualTo(2));
        Assert.That(new TeacherDataLoader().Load(root + "/**/0.jsonl").Count(), Is.EqualTo(3));
        Assert.That(new TeacherDataLoader().Load(root + "/gpt4/*/[1].jsonl").Single().Question, Does.Contain("1+1"));
        Assert.That(new TeacherDataLoader().Load(root + "/gpt?/train_geometry_8/0.jsonl").Count(), Is.EqualTo(1));
        Assert.Throws<FileNotFoundException>(() => new TeacherDataLoader().Load(root + "/**/*.parquet"));
    }

    [Test]
    public void Missing_path_or_empty_folder_throws()
    {
        using var dir = new TempDir();
        Assert.Throws<FileNotFoundException>(() => new TeacherDataLoader().Load(Path.Combine(dir.Path, "nope.jsonl")));
        Directory.CreateDirectory(Path.Combine(dir.Path, "empty"));
        Assert.Throws<FileNotFoundException>(() => new TeacherDataLoader().Load(Path.Combine(dir.Path, "empty")));
    }

    [Test]
    public void Math_problems_load_from_json_per_file_and_jsonl()
    {
        using var dir = new TempDir();
        dir.File("train/algebra/1.json",
            "{\n  \"problem\": \"Solve $x+1=2$.\",\n  \"level\": \"Level 1\",\n  \"type\": \"Algebra\",\n  \"solution\": \"$x=\\\\boxed{1}$\"\n}");
        dir.File("train/counting_and_probability/7.json",
            "{\"problem\": \"P\", \"level\": \"Level 2\", \"solution\": \"\\\\boxed{\\\\frac{1}{2}}\"}"); // no type: folder name
        dir.File("test.jsonl",
            "{\"problem\": \"Q\", \"solution\": \"S \\\\boxed{3}\", \"answer\": \"3\", \"subject\": \"Number Theory\", \"level\": 4, \"unique_id\": \"test/number_theory/9.json\"}\n");
        var loader = new MathDataLoader();
        var problems = loader.Load(dir.Path).ToList();

        Assert.That(problems, Has.Count.EqualTo(3));
        MathProblem json = problems.Single(p => p.Problem.StartsWith("Solve"));
        Assert.That(json.Subject, Is.EqualTo("algebra"));
        Assert.That(json.Level, Is.EqualTo("Level 1"));
        Assert.That(json.Answer, Is.Null);
        Assert.That(json.ReferenceAnswer, Is.EqualTo("1"));
        MathProblem byFolder = problems.Single(p => p.Problem == "P");
        Assert.That(byFolder.Subject, Is.EqualTo("counting_and_probability"));
        Assert.That(byFolder.ReferenceAnswer, Is.EqualTo("\\frac{1}{2}"));
        MathProblem jsonl = problems.Single(p => p.Problem == "Q");
        Assert.That(jsonl.Subject, Is.EqualTo("number_theory"));
        Assert.That(jsonl.Level, Is.EqualTo("Level 4"));
        Assert.That(jsonl.UniqueId, Is.EqualTo("test/number_theory/9.json"));
        Assert.That(jsonl.ReferenceAnswer, Is.EqualTo("3"));
    }

    [Test]
    public void Malformed_math_json_file_reports_the_json_error_line()
    {
        using var dir = new TempDir();
        string file = dir.File("algebra/3.json", "{\n  \"problem\": \"P\",\n  \"solution\": oops\n}");
        var ex = Assert.Throws<MalformedRecordException>(() => new MathDataLoader(MalformedPolicy.Stop).Load(file).ToList());
        Assert.That(ex!.Line, Is.EqualTo(3));
        Assert.That(ex.File, Is.EqualTo(file));

        string missing = dir.File("algebra/4.json", "{\"problem\": \"P\"}");
        var skip = new MathDataLoader(MalformedPolicy.Skip);
        Assert.That(skip.Load(missing).Count(), Is.Zero);
        Assert.That(skip.Report.Entries.Single().Reason, Does.Contain("missing field 'solution'"));
    }

    [Test]
    public void Gsm8k_loads_final_answers_and_rejects_missing_markers()
    {
        using var dir = new TempDir();
        string file = dir.File("gsm8k/train.jsonl",
            "{\"question\": \"Q1\", \"answer\": \"2+2=<<2+2=4>>4\\n#### 4\"}\n" +
            "{\"question\": \"Q2\", \"answer\": \"no marker\"}\n" +
            "{\"question\": \"Q3\", \"answer\": \"...\\n#### 1,200\"}\n");
        var loader = new Gsm8kLoader(MalformedPolicy.Skip);
        var items = loader.Load(file).ToList();
        Assert.That(items.Select(i => i.FinalAnswer), Is.EqualTo(new[] { "4", "1200" }));
        Assert.That(loader.Report.Entries.Single().Line, Is.EqualTo(2));
        Assert.That(loader.Report.Entries.Single().Reason, Does.Contain("####"));
        Assert.Throws<MalformedRecordException>(() => new Gsm8kLoader(MalformedPolicy.Stop).Load(file).ToList());
    }

    [Test]
    public void Missing_level_and_type_are_kept_visibly()
    {
        using var dir = new TempDir();
        string file = dir.File("c.jsonl", "{\"question\": \"Q\", \"answer\": \"\\\\boxed{1}\", \"generated_answer\": [\"\\\\boxed{1}\"]}\n");
        TeacherRecord r = new TeacherDataLoader().Load(file).Single();
        Assert.That(r.Level, Is.EqualTo(MathSubjects.Missing));
        Assert.That(r.Subject, Is.EqualTo(MathSubjects.Missing));
    }

    [TestCase("Counting & Probability", "counting_and_probability")]
    [TestCase("Intermediate Algebra", "intermediate_algebra")]
    [TestCase("number_theory", "number_theory")]
    [TestCase("Precalculus", "precalculus")]
    [TestCase("Calculus & Stuff", "calculus_and_stuff")]
    public void Subjects_are_canonicalised(string raw, string canonical)
    {
        Assert.That(MathSubjects.Canonical(raw), Is.EqualTo(canonical));
    }
}
