/* placeholder: player.js */
