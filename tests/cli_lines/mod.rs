//! `llmcm ...` command lines found in documents and deployment files, checked against the real
//! command-line parser: a renamed flag or subcommand fails the test that found it.

#![allow(dead_code)]

/// Every `llmcm ...` command line in `text` parses with the real command-line parser (a renamed
/// flag or subcommand fails here). Words with `$` (variables,
/// substitutions) become `1` first.
pub fn assert_commands_parse(origin: &str, commands: &[String]) {
    check(origin, commands, false)
}

/// `assert_commands_parse` for mentions in prose (`llmcm verify`, `--revision N`): a missing
/// required argument or a placeholder value is accepted, an unknown command or flag is not.
pub fn assert_mentions_parse(origin: &str, commands: &[String]) {
    check(origin, commands, true)
}

fn check(origin: &str, commands: &[String], mention: bool) {
    for line in commands {
        let mut words =
            words_of(line).unwrap_or_else(|| panic!("{origin}: cannot split {line:?} into words"));
        for w in &mut words {
            if w.contains('$') {
                *w = "1".into();
            }
        }
        if let Err(e) = llmcm::cli::command().try_get_matches_from(&words)
            && !matches!(
                e.kind(),
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
            )
            && !(mention
                && matches!(
                    e.kind(),
                    clap::error::ErrorKind::MissingRequiredArgument
                        | clap::error::ErrorKind::MissingSubcommand
                        | clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
                        | clap::error::ErrorKind::InvalidValue
                        | clap::error::ErrorKind::ValueValidation
                ))
        {
            panic!("{origin}: `{line}` is not a valid llmcm command: {e}");
        }
    }
}

/// The words of the command at the start of `tail` (the rest of a line): split as the shell
/// would (a quote closing something opened before `llmcm` is cut off), up to `&&`, `||`, `|`, `;`,
/// `)`, `&`, a redirection or a comment.
fn words_of(tail: &str) -> Option<Vec<String>> {
    let mut text = tail;
    let words = loop {
        if let Some(words) = shlex::split(text) {
            break words;
        }
        text = &text[..text.rfind(['\'', '"'])?];
    };
    let mut out = Vec::new();
    for w in words {
        if ["&&", "||", "|", ";", ")", "&"].contains(&w.as_str())
            || w.starts_with(['>', '<', '#'])
            || w.trim_start_matches(|c: char| c.is_ascii_digit())
                .starts_with('>')
        {
            break;
        }
        // `x)` closing a `$(` opened before `llmcm`, or `x;`, ends the command.
        let unbalanced = w.matches(')').count() > w.matches('(').count();
        if let Some(stripped) = w
            .strip_suffix(';')
            .or_else(|| w.strip_suffix(')').filter(|_| unbalanced))
        {
            out.push(stripped.to_owned());
            break;
        }
        out.push(w);
    }
    Some(out)
}

/// `llmcm ...` command lines in a text: where `llmcm` (or an absolute path to it) is run — at the
/// start of a line, after `$(` or `(`, or after `sudo`, `--`, `&&`, `||`, `;`, `|`, `then`,
/// `do`, `time` or an environment assignment (`VAR=value`): the rest of the line from `llmcm`
/// (`words_of` finds where the command ends). Comments are skipped.
pub fn commands_in(text: &str) -> Vec<String> {
    const BEFORE: &[&str] = &[
        "sudo", "--", "&&", "||", ";", "|", "then", "do", "time", "-", ">-",
    ];
    let mut out = Vec::new();
    let text = text.replace("\\\n", " ");
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        let mut from = 0;
        while let Some(at) = line[from..].find("llmcm ") {
            let start = from + at;
            // The word `llmcm` ends: from its start (a path such as /usr/local/bin/llmcm, or
            // ExecStart=/usr/local/bin/llmcm, is one word), what comes before decides.
            let word_start = line[..start]
                .rfind(char::is_whitespace)
                .map_or(0, |i| i + 1);
            let word = &line[word_start..start];
            let in_word_ok = word.is_empty()
                || word.ends_with('/') && (word.starts_with('/') || word.contains("=/"));
            let prev = line[..word_start].trim_end();
            let last = prev
                .split_whitespace()
                .last()
                .unwrap_or("")
                .trim_start_matches(['\'', '"']);
            let runs = word.ends_with('(')
                || in_word_ok
                    && (prev.is_empty()
                        || BEFORE.contains(&last)
                        || (last.contains('=')
                            && last.starts_with(|c: char| c.is_ascii_uppercase())
                            && !last.starts_with("Description")));
            if runs {
                out.push(line[start..].to_owned());
            }
            from = start + 6;
        }
    }
    out
}
