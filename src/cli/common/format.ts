/** How the commands write sizes and counts. */

/** 4096 → "4 KiB", 1572864 → "1.5 MiB", 100 → "100 B". */
export function bytes(n: number, digits = 1): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${Number.isInteger(v) ? v : v.toFixed(digits)} ${units[i]}`;
}

/** 1234567 → "1,234,567". */
export const int = (n: number): string => Math.round(n).toLocaleString('en-US');
