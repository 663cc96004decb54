/**
 * The "Track this cell" text transformation: add or remove `%%track` as a cell's first line.
 */

const TRACK_LINE = /^%%track(?:[ \t]+(.*))?$/;

function firstLine(source: string): string {
  const end = source.indexOf('\n');
  return (end === -1 ? source : source.slice(0, end)).replace(/\r$/, '');
}

/** True when the cell's first line is a `%%track` magic (with or without arguments). */
export function isTracked(source: string): boolean {
  return TRACK_LINE.test(firstLine(source));
}

/** The run name given on the `%%track` line (its first argument that is not an option). */
export function trackedName(source: string): string | null {
  const match = TRACK_LINE.exec(firstLine(source));
  if (!match || !match[1]) {
    return null;
  }
  // the options of %%track that take a value (nbmlops/ipython/magics.py): their value is
  // not the name
  const withValue = new Set([
    '-e',
    '--experiment',
    '-p',
    '--param',
    '-m',
    '--metric',
    '-i',
    '--ignore'
  ]);
  const words = match[1].trim().split(/\s+/);
  for (let i = 0; i < words.length; i++) {
    const word = words[i];
    if (withValue.has(word)) {
      i++;
    } else if (!word.startsWith('-')) {
      return word;
    }
  }
  return null;
}

/**
 * The source with `%%track` toggled: a tracked cell loses its first line (and its arguments),
 * any other cell gets `%%track` (with `name` when given) as a new first line. The rest of the
 * cell is kept byte for byte, so toggling twice gives back the original text.
 */
export function toggleTrack(source: string, name?: string): string {
  if (isTracked(source)) {
    const end = source.indexOf('\n');
    return end === -1 ? '' : source.slice(end + 1);
  }
  const safe = name ? name.replace(/\s+/g, '-') : '';
  return `%%track${safe ? ' ' + safe : ''}\n${source}`;
}
