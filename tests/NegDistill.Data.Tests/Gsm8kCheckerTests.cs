using NegDistill.Data;

namespace NegDistill.Data.Tests;

public class Gsm8kCheckerTests
{
    [TestCase("Natalia sold 48/2 = <<48/2=24>>24 clips.\n#### 72", "72")]
    [TestCase("... so the total is 1,234\n#### 1,234", "1234")]
    [TestCase("#### -5", "-5")]
    [TestCase("a #### 3 then\n#### 4", "4")]                  // the last marker
    [TestCase("#### 3.50.", "3.50")]
    public void ExtractReferenceAnswer_reads_after_the_marker(string solution, string expected)
    {
        Assert.That(Gsm8kChecker.ExtractReferenceAnswer(solution), Is.EqualTo(expected));
    }

    [TestCase("no marker 72")]
    [TestCase("####   ")]
    public void ExtractReferenceAnswer_without_answer_is_null(string solution)
    {
        Assert.That(Gsm8kChecker.ExtractReferenceAnswer(solution), Is.Null);
    }

    [TestCase("She has 3 apples and buys 4 more, so 7 apples.", "7")]      // last number
    [TestCase("Total: $1,250.", "1250")]
    [TestCase("The answer is \\boxed{18} (not 20).", "18")]                // boxed beats the last number
    [TestCase("we get 5 then\n#### 12 apples, 13", "12")]                  // marker beats everything
    [TestCase("It is -3.5 degrees", "-3.5")]
    [TestCase("ratio 3/4", "3/4")]
    public void ExtractPredictedAnswer_takes_marker_box_or_last_number(string output, string expected)
    {
        Assert.That(Gsm8kChecker.ExtractPredictedAnswer(output), Is.EqualTo(expected));
    }

    [Test]
    public void ExtractPredictedAnswer_without_any_number_is_null()
    {
        Assert.That(Gsm8kChecker.ExtractPredictedAnswer("I do not know."), Is.Null);
    }

    [TestCase("18", "18", true)]
    [TestCase("18.0", "18", true)]
    [TestCase("$18.00", "18", true)]
    [TestCase("1,000", "1000", true)]
    [TestCase("0.75", "3/4", true)]
    [TestCase("17", "18", false)]
    [TestCase("-18", "18", false)]
    [TestCase("abc", "abc", true)]              // non-numeric: normalised text
    [TestCase("abc", "abd", false)]
    public void IsEquiv_is_numeric(string a, string b, bool expected)
    {
        Assert.That(Gsm8kChecker.IsEquiv(a, b), Is.EqualTo(expected));
    }

    [Test]
    public void IsEquiv_null_is_never_equal()
    {
        Assert.That(Gsm8kChecker.IsEquiv(null, "3"), Is.False);
        Assert.That(Gsm8kChecker.IsEquiv("3", null), Is.False);
        Assert.That(Gsm8kChecker.IsEquiv(null, null), Is.False);
    }

    [Test]
    public void IsCorrect_end_to_end()
    {
        const string reference = "He pays 10*2 = <<10*2=20>>20 dollars.\n#### 20";
        Assert.That(Gsm8kChecker.IsCorrect("10 times 2 is 20. So he pays $20.", reference), Is.True);
        Assert.That(Gsm8kChecker.IsCorrect("The answer is \\boxed{20}", reference), Is.True);
        Assert.That(Gsm8kChecker.IsCorrect("He pays 20 dollars, plus 5 tip = 25", reference), Is.False);
        Assert.That(Gsm8kChecker.IsCorrect("no idea", reference), Is.False);
    }

    [Test]
    public void TryParseNumber_rejects_text_and_zero_denominators()
    {
        Assert.That(Gsm8kChecker.TryParseNumber("1/0", out _), Is.False);
        Assert.That(Gsm8kChecker.TryParseNumber("x", out _), Is.False);
        Assert.That(Gsm8kChecker.TryParseNumber(".5", out decimal v), Is.True);
        Assert.That(v, Is.EqualTo(0.5m));
    }
}
