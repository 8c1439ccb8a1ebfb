# bash completion for distflow and its distflow-<mode> symlinks.
# Modes, subcommands, flags and flag choices are read from the binary's own
# --help at completion time, so they follow the installed version.

# Prints one line per completion candidate of `"$@" --help`:
#   o <TAB> flag <TAB> 1 if it takes a value <TAB> its choices (space-separated)
#   s <TAB> subcommand
_distflow_parse_help() {
  "$@" --help 2>/dev/null | awk '
    /^[A-Z][A-Za-z]*:$/ { section = $0; next }
    /^$/ { section = "" }
    section == "Options:" && /^  -/ {
      value = ($2 ~ /^[A-Z][A-Z0-9_]*([:=].*)?$/) ? 1 : 0
      choices = ""
      if (match($0, /:\{[^}]*\}/)) {
        choices = substr($0, RSTART + 2, RLENGTH - 3)
        gsub(/,/, " ", choices)
      }
      n = split($1, names, ",")
      for (i = 1; i <= n; i++) printf "o\t%s\t%d\t%s\n", names[i], value, choices
    }
    section == "Subcommands:" && /^  [a-z]/ { printf "s\t%s\n", $1 }'
}

_distflow() {
  local cur=${COMP_WORDS[COMP_CWORD]} prev=""
  ((COMP_CWORD > 0)) && prev=${COMP_WORDS[COMP_CWORD - 1]}
  if [[ $cur == "=" ]]; then # --flag=<TAB>: bash splits at '='
    cur=""
  elif [[ $prev == "=" ]]; then
    prev=${COMP_WORDS[COMP_CWORD - 2]}
  fi
  # `distflow-pmd` is `distflow pmd`: its --help is the mode's.
  local -a cmd=("${COMP_WORDS[0]}")
  local help i word kind name value choices skip=0
  help=$(_distflow_parse_help "${cmd[@]}")
  for ((i = 1; i < COMP_CWORD; i++)); do
    word=${COMP_WORDS[i]}
    if ((skip)); then
      skip=0
      continue
    fi
    if [[ $word == --exec ]]; then # node --exec CMD ARGS...: complete the command
      if ((i + 1 == COMP_CWORD)); then
        mapfile -t COMPREPLY < <(compgen -c -- "$cur" | sort -u)
      else
        mapfile -t COMPREPLY < <(compgen -f -- "$cur")
      fi
      return
    fi
    if [[ $word == -* ]]; then
      [[ $word == *=* ]] && continue
      grep -q "^o	$word	1	" <<<"$help" && skip=1
      continue
    fi
    if grep -qx "s	$word" <<<"$help"; then
      cmd+=("$word")
      help=$(_distflow_parse_help "${cmd[@]}")
    fi
  done

  if [[ $prev == -* ]]; then
    while IFS=$'\t' read -r kind name value choices; do
      [[ $kind == o && $name == "$prev" && $value == 1 ]] || continue
      if [[ -n $choices ]]; then
        mapfile -t COMPREPLY < <(compgen -W "$choices" -- "$cur")
      fi
      return # a value without a list of choices: nothing to offer
    done <<<"$help"
  fi
  local words=""
  while IFS=$'\t' read -r kind name value choices; do
    if [[ $cur == -* ]]; then
      [[ $kind == o ]] && words+=" $name"
    else
      [[ $kind == s ]] && words+=" $name"
    fi
  done <<<"$help"
  if [[ -n $words ]]; then
    mapfile -t COMPREPLY < <(compgen -W "$words" -- "$cur")
  else
    mapfile -t COMPREPLY < <(compgen -f -- "$cur")
  fi
}

complete -F _distflow distflow distflow-pmd distflow-node distflow-send distflow-call distflow-stats distflow-watch distflow-bench
