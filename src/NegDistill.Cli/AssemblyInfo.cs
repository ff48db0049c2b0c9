using System.Runtime.CompilerServices;

[assembly: InternalsVisibleTo("NegDistill.Tests")]
