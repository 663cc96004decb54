/**
 * The extension's icons. Their paths carry JupyterLab's `jp-icon3` class, which the theme
 * colours, so they follow light and dark themes without a colour of their own.
 */

import { LabIcon } from '@jupyterlab/ui-components';

export const mlopsIcon = new LabIcon({
  name: 'nbmlops:mlops',
  svgstr:
    '<svg xmlns="http://www.w3.org/2000/svg" width="16" viewBox="0 0 24 24">' +
    '<g class="jp-icon3" fill="currentColor">' +
    '<circle cx="5" cy="6" r="2.5"/><circle cx="5" cy="18" r="2.5"/><circle cx="19" cy="12" r="2.5"/>' +
    '<path d="M7 6.5h3.5L15 11.2l-1 1L10 8H7zM7 17.5h3.5l4.5-4.7-1-1L10 16H7z"/></g></svg>'
});

export const trackIcon = new LabIcon({
  name: 'nbmlops:track',
  svgstr:
    '<svg xmlns="http://www.w3.org/2000/svg" width="16" viewBox="0 0 24 24">' +
    '<g class="jp-icon3" fill="currentColor">' +
    '<path d="M3 19h18v2H3zM5 17l4.5-6 3.5 3 5-7 1.6 1.2L13.3 17l-3.5-3L6.6 18.2z"/></g></svg>'
});
